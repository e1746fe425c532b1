// The Go recipe of docs/clients.md, run by tests/it/recipes.rs: net/http's default client
// (what twilio-go uses), configured only through HTTPS_PROXY (credentials, if any, in its URL)
// and SSL_CERT_FILE. Makes a form POST …/Messages.json and a GET whose query the proxy must
// normalize; prints "METHOD STATUS" per call and exits 1 at the first that is not a 2xx.
package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	account := os.Getenv("TWILIO_ACCOUNT_SID")
	messages := "https://api.twilio.com/2010-04-01/Accounts/" + account + "/Messages.json"
	form := url.Values{"To": {"+14155550100"}, "From": {"+14155550199"}, "Body": {"Hello from Go"}}
	client := &http.Client{Timeout: 20 * time.Second} // http.DefaultTransport: ProxyFromEnvironment

	post, _ := http.NewRequest("POST", messages, strings.NewReader(form.Encode()))
	post.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	get, _ := http.NewRequest("GET", messages+"?PageSize=20&To=%2B14155550100", nil)
	for _, request := range []*http.Request{post, get} {
		request.SetBasicAuth(os.Getenv("TWILIO_API_KEY"), os.Getenv("TWILIO_API_SECRET"))
		response, err := client.Do(request)
		if err != nil {
			fmt.Println(request.Method, "error:", err)
			os.Exit(1)
		}
		body, _ := io.ReadAll(response.Body)
		response.Body.Close()
		fmt.Println(request.Method, response.StatusCode, response.Proto)
		if response.StatusCode < 200 || response.StatusCode > 299 {
			fmt.Println(string(body))
			os.Exit(1)
		}
	}
}
