import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.HexFormat;
import javax.crypto.Cipher;
import javax.crypto.KeyGenerator;
import javax.crypto.Mac;
import javax.crypto.spec.IvParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * Reference results from the JDK alone, for tests/jdk/test_jdk_crosscheck.py.
 *
 * One command per stdin line, one answer per stdout line (flushed), so a single JVM serves a whole test
 * session. Every string argument is hex-encoded UTF-8, which keeps the protocol ASCII whatever the locale.
 *
 *   prng SEED N                  hex of nextBytes(N) of SHA1PRNG after setSeed(SEED)
 *   keygen KEY BITS              hex of KeyGenerator("AES").init(BITS, SHA1PRNG seeded with KEY)
 *   update STATE OUTPUT          hex of the state after the JDK's private SHA1PRNG updateState
 *   enc KEY BITS IV PLAIN        IV + Base64(AES/CBC/PKCS5Padding), key as in keygen
 *   dec KEY BITS VALUE           hex of the UTF-8 plaintext of VALUE
 *   sig KEY NONCE TS PAYLOAD     inner-hex SPACE upper-hex outer signature (spec 2.1)
 *   bodysign KEY BODY            Base64(HmacSHA256(KEY, BODY))
 *
 * A failing command answers "ERR <exception>" and the loop goes on.
 */
public final class CrossCheck {
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
            case "prng": {
                SecureRandom random = SecureRandom.getInstance("SHA1PRNG");
                random.setSeed(HEX.parseHex(a[1]));
                byte[] result = new byte[Integer.parseInt(a[2])];
                random.nextBytes(result);
                return HEX.formatHex(result);
            }
            case "keygen":
                return HEX.formatHex(aesKey(text(a[1]), Integer.parseInt(a[2])).getEncoded());
            case "update": {
                Class<?> impl = Class.forName("sun.security.provider.SecureRandom");
                Method update = impl.getDeclaredMethod("updateState", byte[].class, byte[].class);
                update.setAccessible(true);
                byte[] state = HEX.parseHex(a[1]);
                update.invoke(null, state, HEX.parseHex(a[2]));
                return HEX.formatHex(state);
            }
            case "enc": {
                String iv = text(a[3]);
                Cipher cipher = Cipher.getInstance("AES/CBC/PKCS5Padding");
                cipher.init(Cipher.ENCRYPT_MODE, aesKey(text(a[1]), Integer.parseInt(a[2])),
                        new IvParameterSpec(iv.getBytes(StandardCharsets.UTF_8)));
                byte[] sealed = cipher.doFinal(text(a[4]).getBytes(StandardCharsets.UTF_8));
                return iv + Base64.getEncoder().encodeToString(sealed);
            }
            case "dec": {
                String value = text(a[3]);
                Cipher cipher = Cipher.getInstance("AES/CBC/PKCS5Padding");
                cipher.init(Cipher.DECRYPT_MODE, aesKey(text(a[1]), Integer.parseInt(a[2])),
                        new IvParameterSpec(value.substring(0, 16).getBytes(StandardCharsets.UTF_8)));
                byte[] plain = cipher.doFinal(Base64.getDecoder().decode(value.substring(16)));
                return HEX.formatHex(plain);
            }
            case "sig": {
                String key = text(a[1]);
                String inner = HEX.formatHex(hmac(key, HEX.parseHex(a[4])));
                String canonical = key + text(a[2]) + text(a[3]) + inner;
                String outer = HEX.formatHex(hmac(key, canonical.getBytes(StandardCharsets.UTF_8)));
                return inner + " " + outer.toUpperCase(java.util.Locale.ROOT);
            }
            case "bodysign":
                return Base64.getEncoder().encodeToString(hmac(text(a[1]), HEX.parseHex(a[2])));
            default:
                throw new IllegalArgumentException(a[0]);
        }
    }

    private static javax.crypto.SecretKey aesKey(String key, int bits) throws Exception {
        SecureRandom random = SecureRandom.getInstance("SHA1PRNG");
        random.setSeed(key.getBytes(StandardCharsets.UTF_8));
        KeyGenerator generator = KeyGenerator.getInstance("AES");
        generator.init(bits, random);
        return generator.generateKey();
    }

    private static byte[] hmac(String key, byte[] data) throws Exception {
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        return mac.doFinal(data);
    }
}
