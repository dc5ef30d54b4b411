// Verify an isvserver license offline (JDK 15+): java LicenseVerify.java PUBLIC_KEY TOKEN
import java.nio.charset.StandardCharsets;
import java.security.KeyFactory;
import java.security.Signature;
import java.security.spec.X509EncodedKeySpec;
import java.util.Base64;

public class LicenseVerify {
    public static void main(String[] args) throws Exception {
        String[] part = args[1].split("\\.");
        if (part.length != 3 || !part[0].equals("ISVL1")) throw new IllegalArgumentException("not a license");
        byte[] raw = Base64.getUrlDecoder().decode(args[0]);
        byte[] der = new byte[44];  // X.509 SubjectPublicKeyInfo of an Ed25519 key: 12-byte header + key
        System.arraycopy(new byte[] {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}, 0, der, 0, 12);
        System.arraycopy(raw, 0, der, 12, 32);
        Signature ed = Signature.getInstance("Ed25519");
        ed.initVerify(KeyFactory.getInstance("Ed25519").generatePublic(new X509EncodedKeySpec(der)));
        ed.update((part[0] + "." + part[1]).getBytes(StandardCharsets.US_ASCII));
        if (!ed.verify(Base64.getUrlDecoder().decode(part[2]))) throw new SecurityException("bad signature");
        String grant = new String(Base64.getUrlDecoder().decode(part[1]), StandardCharsets.UTF_8);
        java.util.regex.Matcher exp = java.util.regex.Pattern.compile("\"exp\":(\\d+)").matcher(grant);
        if (exp.find() && Long.parseLong(exp.group(1)) <= System.currentTimeMillis() / 1000)
            throw new SecurityException("license expired");
        System.out.println(grant);  // {"exp":…,"iat":…,"iid":…,"lid":…,"mkt":…,"sku":…,"ver":…}
    }
}
