-- Single sign-on: logins under way (the state's hash, one use, an expiry) and each callback's outcome.
-- Nothing of the OAuth exchange is stored in clear: the state and the browser cookie as SHA-256, the
-- PKCE verifier sealed; codes, tokens and the client secret never.
CREATE TABLE kit_sso_state (
    id {pk},
    state_hash VARCHAR(64) NOT NULL,
    browser_hash VARCHAR(64) NOT NULL,
    instance_id VARCHAR(64) NOT NULL,
    app_id VARCHAR(64) NOT NULL,
    code_verifier_sealed TEXT,
    redirect_uri TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    CONSTRAINT kit_sso_state_hash_key UNIQUE (state_hash)
);

CREATE INDEX kit_sso_state_expires ON kit_sso_state (expires_at);

CREATE TABLE kit_sso_login (
    id {pk},
    instance_id VARCHAR(64),
    app_id VARCHAR(64),
    user_name VARCHAR(64),
    outcome VARCHAR(32) NOT NULL,
    reason VARCHAR(255) NOT NULL,
    jti VARCHAR(64),
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    CONSTRAINT kit_sso_login_jti_key UNIQUE (jti)
);

CREATE INDEX kit_sso_login_instance ON kit_sso_login (instance_id, created_at);
