-- Whether each call's answer was written to the caller: sent, not_sent (never written: the worker was
-- stopped while the call waited) or client_gone (the caller had closed the connection). Rows from before
-- this column are taken as sent.
ALTER TABLE callback_log ADD COLUMN delivery VARCHAR(16) NOT NULL DEFAULT 'sent';
