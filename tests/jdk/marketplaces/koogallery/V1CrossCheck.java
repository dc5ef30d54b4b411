// The V1 authToken as Huawei's Java sample computes it (spec §2.3): parameters in a TreeMap (String
// order), "k=v&…", HMAC-SHA256 keyed key + timeStamp, Base64. One command per line, arguments hex.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.HexFormat;
import java.util.Map;
import java.util.TreeMap;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class V1CrossCheck {
    private static final HexFormat HEX = HexFormat.of();

    private static String text(String hex) {
        return new String(HEX.parseHex(hex), StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        String line;
        while ((line = in.readLine()) != null) {
            String[] a = line.split(" ", -1);
            try {
                // token KEY NAME VALUE NAME VALUE ...
                Map<String, String> params = new TreeMap<>();
                for (int i = 2; i + 1 < a.length; i += 2) params.putIfAbsent(text(a[i]), text(a[i + 1]));
                StringBuilder joined = new StringBuilder();
                for (Map.Entry<String, String> e : params.entrySet()) {
                    if (e.getKey().equals("authToken")) continue;
                    if (joined.length() > 0) joined.append('&');
                    joined.append(e.getKey()).append('=').append(e.getValue());
                }
                Mac mac = Mac.getInstance("HmacSHA256");
                String key = text(a[1]) + params.get("timeStamp");
                mac.init(new SecretKeySpec(key.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
                byte[] digest = mac.doFinal(joined.toString().getBytes(StandardCharsets.UTF_8));
                System.out.println(Base64.getEncoder().encodeToString(digest));
            } catch (Exception e) {
                System.out.println("error " + e);
            }
            System.out.flush();
        }
    }
}
