import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.security.KeyFactory;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.spec.MGF1ParameterSpec;
import java.security.spec.PKCS8EncodedKeySpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.Base64;
import java.util.HexFormat;
import javax.crypto.Cipher;
import javax.crypto.Mac;
import javax.crypto.spec.OAEPParameterSpec;
import javax.crypto.spec.PSource;
import javax.crypto.spec.SecretKeySpec;

/**
 * Reference results from the JDK alone for tests/jdk/test_kit_jdk.py (Kit sync, spec 2.2 and 4).
 *
 * One command per stdin line, one answer per stdout line. String arguments are hex-encoded UTF-8.
 *
 *   xsign KEY NONCE TS PAYLOAD    upper-hex HmacSHA256(KEY, KEY + NONCE + TS + PAYLOAD), PAYLOAD hex bytes
 *   oaep MODE PUBLIC PLAIN        Base64 RSA-OAEP ciphertext; PUBLIC is Base64 DER SubjectPublicKeyInfo;
 *                                 MODE sha1 | sha256 (the SunJCE default: MGF1-SHA-1) | sha256mgf256
 *   unoaep PRIVATE VALUE          hex of the UTF-8 plaintext; PRIVATE is Base64 DER PKCS#8, OAEP SHA-256
 *                                 with MGF1-SHA-256 (what our own encryption uses)
 *
 * A failing command answers "ERR <exception>" and the loop goes on.
 */
public final class KitCrossCheck {
    private static final HexFormat HEX = HexFormat.of();

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.US_ASCII);
        String line;
        while ((line = in.readLine()) != null) {
            if (line.isEmpty()) {
                continue;
            }
            String answer;
            try {
                answer = run(line.split(" ", -1));
            } catch (Exception e) {
                answer = "ERR " + e.getClass().getName();
            }
            out.println(answer);
            out.flush();
        }
    }

    private static String text(String hex) {
        return new String(HEX.parseHex(hex), StandardCharsets.UTF_8);
    }

    private static String run(String[] a) throws Exception {
        switch (a[0]) {
            case "xsign": {
                String key = text(a[1]);
                byte[] prefix = (key + text(a[2]) + text(a[3])).getBytes(StandardCharsets.UTF_8);
                Mac mac = Mac.getInstance("HmacSHA256");
                mac.init(new SecretKeySpec(key.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
                mac.update(prefix);
                return HEX.formatHex(mac.doFinal(HEX.parseHex(a[4]))).toUpperCase(java.util.Locale.ROOT);
            }
            case "oaep": {
                PublicKey key = KeyFactory.getInstance("RSA")
                        .generatePublic(new X509EncodedKeySpec(Base64.getDecoder().decode(text(a[2]))));
                Cipher cipher;
                switch (text(a[1])) {
                    case "sha1":
                        cipher = Cipher.getInstance("RSA/ECB/OAEPWithSHA-1AndMGF1Padding");
                        cipher.init(Cipher.ENCRYPT_MODE, key);
                        break;
                    case "sha256":
                        cipher = Cipher.getInstance("RSA/ECB/OAEPWithSHA-256AndMGF1Padding");
                        cipher.init(Cipher.ENCRYPT_MODE, key);
                        break;
                    case "sha256mgf256":
                        cipher = Cipher.getInstance("RSA/ECB/OAEPPadding");
                        cipher.init(Cipher.ENCRYPT_MODE, key, sha256Spec());
                        break;
                    default:
                        throw new IllegalArgumentException(text(a[1]));
                }
                byte[] sealed = cipher.doFinal(text(a[3]).getBytes(StandardCharsets.UTF_8));
                return Base64.getEncoder().encodeToString(sealed);
            }
            case "unoaep": {
                PrivateKey key = KeyFactory.getInstance("RSA")
                        .generatePrivate(new PKCS8EncodedKeySpec(Base64.getDecoder().decode(text(a[1]))));
                Cipher cipher = Cipher.getInstance("RSA/ECB/OAEPPadding");
                cipher.init(Cipher.DECRYPT_MODE, key, sha256Spec());
                return HEX.formatHex(cipher.doFinal(Base64.getDecoder().decode(text(a[2]))));
            }
            default:
                throw new IllegalArgumentException(a[0]);
        }
    }

    private static OAEPParameterSpec sha256Spec() {
        return new OAEPParameterSpec("SHA-256", "MGF1", MGF1ParameterSpec.SHA256, PSource.PSpecified.DEFAULT);
    }
}
