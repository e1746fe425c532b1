// The Java recipes of docs/clients.md, run by tests/it/recipes.rs: the two calls an app makes
// (a form POST …/Messages.json and a GET whose query the proxy must normalize) with one of the
// clients twilio-java and Java apps use, configured only through the documented system
// properties (-Dhttps.proxyHost/-Dhttps.proxyPort, -Djavax.net.ssl.trustStore) and, with
// client authentication, -Dhttps.proxyUser/-Dhttps.proxyPassword and
// -Djdk.http.auth.tunneling.disabledSchemes= (empty).
//
//   java Recipes jdk|urlconnection|apache
//
// Reads TWILIO_API_KEY, TWILIO_API_SECRET, TWILIO_ACCOUNT_SID. Prints one line per call,
// "METHOD STATUS", and exits 1 at the first call that is not a 2xx.

import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Authenticator;
import java.net.HttpURLConnection;
import java.net.PasswordAuthentication;
import java.net.URI;
import java.net.URL;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Base64;

import org.apache.http.client.methods.CloseableHttpResponse;
import org.apache.http.client.methods.HttpGet;
import org.apache.http.client.methods.HttpPost;
import org.apache.http.client.methods.HttpUriRequest;
import org.apache.http.entity.ContentType;
import org.apache.http.entity.StringEntity;
import org.apache.http.impl.client.CloseableHttpClient;
import org.apache.http.impl.client.HttpClientBuilder;
import org.apache.http.impl.conn.PoolingHttpClientConnectionManager;
import org.apache.http.util.EntityUtils;

public class Recipes {
    static final String KEY = System.getenv("TWILIO_API_KEY");
    static final String SECRET = System.getenv("TWILIO_API_SECRET");
    static final String ACCOUNT = System.getenv("TWILIO_ACCOUNT_SID");
    static final String MESSAGES =
            "https://api.twilio.com/2010-04-01/Accounts/" + ACCOUNT + "/Messages.json";
    static final String FORM = "To=%2B14155550100&From=%2B14155550199&Body=Hello+from+Java";
    static final String QUERY = "?PageSize=20&To=%2B14155550100";
    static final String BASIC = "Basic " + Base64.getEncoder()
            .encodeToString((KEY + ":" + SECRET).getBytes(StandardCharsets.UTF_8));

    /**
     * The docs' Authenticator for client authentication: the proxy's 407 gets the proxy
     * credentials, Twilio's (and the proxy's) 401 the API key. Only for a proxy or server
     * challenge; never sent anywhere else.
     */
    static final class TwilioAuthenticator extends Authenticator {
        @Override
        protected PasswordAuthentication getPasswordAuthentication() {
            if (getRequestorType() == RequestorType.PROXY) {
                String user = System.getProperty("https.proxyUser");
                String password = System.getProperty("https.proxyPassword", "");
                return user == null ? null : new PasswordAuthentication(user, password.toCharArray());
            }
            return new PasswordAuthentication(KEY, SECRET.toCharArray());
        }
    }

    static boolean clientAuthentication() {
        return System.getProperty("https.proxyUser") != null;
    }

    public static void main(String[] args) throws Exception {
        String client = args.length > 0 ? args[0] : "";
        int[] statuses;
        switch (client) {
            case "jdk": statuses = jdk(); break;
            case "urlconnection": statuses = urlConnection(); break;
            case "apache": statuses = apache(); break;
            default:
                System.err.println("usage: java Recipes jdk|urlconnection|apache");
                System.exit(2);
                return;
        }
        for (int status : statuses) {
            if (status < 200 || status > 299) {
                System.exit(1);
            }
        }
    }

    static int report(String method, int status, String body) {
        System.out.println(method + " " + status);
        if (status < 200 || status > 299) {
            System.out.println(body);
        }
        return status;
    }

    /** java.net.http.HttpClient: the default proxy selector reads https.proxyHost/Port. */
    static int[] jdk() throws Exception {
        HttpClient.Builder builder = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10));
        boolean challenged = clientAuthentication();
        if (challenged) {
            // With an Authenticator, this client drops an Authorization header set by the app:
            // the API key, too, must come from the Authenticator (on the 401 challenge).
            builder.authenticator(new TwilioAuthenticator());
        }
        HttpClient http = builder.build();
        HttpRequest.Builder post = HttpRequest.newBuilder(URI.create(MESSAGES))
                .timeout(Duration.ofSeconds(20))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .POST(HttpRequest.BodyPublishers.ofString(FORM));
        HttpRequest.Builder get = HttpRequest.newBuilder(URI.create(MESSAGES + QUERY))
                .timeout(Duration.ofSeconds(20))
                .GET();
        if (!challenged) {
            post.header("Authorization", BASIC);
            get.header("Authorization", BASIC);
        }
        int[] statuses = new int[2];
        int i = 0;
        for (HttpRequest request : new HttpRequest[] {post.build(), get.build()}) {
            HttpResponse<String> response = http.send(request, HttpResponse.BodyHandlers.ofString());
            statuses[i++] = report(request.method(), response.statusCode(), response.body());
        }
        return statuses;
    }

    /** HttpURLConnection: reads https.proxyHost/Port itself; the app sends the API key. */
    static int[] urlConnection() throws Exception {
        if (clientAuthentication()) {
            Authenticator.setDefault(new TwilioAuthenticator());
        }
        int[] statuses = new int[2];
        for (int i = 0; i < 2; i++) {
            boolean isPost = i == 0;
            HttpURLConnection connection =
                    (HttpURLConnection) new URL(isPost ? MESSAGES : MESSAGES + QUERY).openConnection();
            connection.setConnectTimeout(10_000);
            connection.setReadTimeout(20_000);
            connection.setRequestProperty("Authorization", BASIC);
            if (isPost) {
                connection.setRequestMethod("POST");
                connection.setDoOutput(true);
                connection.setRequestProperty("Content-Type", "application/x-www-form-urlencoded");
                try (OutputStream out = connection.getOutputStream()) {
                    out.write(FORM.getBytes(StandardCharsets.UTF_8));
                }
            }
            int status = connection.getResponseCode();
            InputStream stream = status < 400 ? connection.getInputStream() : connection.getErrorStream();
            ByteArrayOutputStream body = new ByteArrayOutputStream();
            if (stream != null) {
                stream.transferTo(body);
                stream.close();
            }
            statuses[i] = report(isPost ? "POST" : "GET", status, body.toString(StandardCharsets.UTF_8));
        }
        return statuses;
    }

    /**
     * Apache HttpClient 4.5 built as twilio-java's NetworkHttpClient builds it: a pooling
     * connection manager and useSystemProperties(), which reads https.proxyHost/Port and,
     * for the 407, https.proxyUser/https.proxyPassword.
     */
    static int[] apache() throws Exception {
        try (CloseableHttpClient http = HttpClientBuilder.create()
                .useSystemProperties()
                .setConnectionManager(new PoolingHttpClientConnectionManager())
                .build()) {
            HttpPost post = new HttpPost(MESSAGES);
            post.setEntity(new StringEntity(FORM, ContentType.APPLICATION_FORM_URLENCODED));
            HttpGet get = new HttpGet(MESSAGES + QUERY);
            int[] statuses = new int[2];
            int i = 0;
            for (HttpUriRequest request : new HttpUriRequest[] {post, get}) {
                request.setHeader("Authorization", BASIC);
                try (CloseableHttpResponse response = http.execute(request)) {
                    String body = response.getEntity() == null ? "" : EntityUtils.toString(response.getEntity());
                    statuses[i++] = report(request.getMethod(), response.getStatusLine().getStatusCode(), body);
                }
            }
            return statuses;
        }
    }
}
