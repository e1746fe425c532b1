# The Ruby recipe of docs/clients.md, run by tests/it/recipes.rs: plain Net::HTTP (what
# twilio-ruby's default Faraday adapter sits on), configured only through the environment.
# Net::HTTP looks its proxy up as for an http:// URL whatever the scheme, so it reads only
# http_proxy (credentials, if any, in its URL), never https_proxy; OpenSSL reads SSL_CERT_FILE.
# Makes a form POST …/Messages.json and a GET whose query the proxy must normalize; prints
# "METHOD STATUS" per call and exits 1 at the first that is not a 2xx.
require "net/http"
require "uri"

messages = "/2010-04-01/Accounts/#{ENV.fetch("TWILIO_ACCOUNT_SID")}/Messages.json"
post = Net::HTTP::Post.new(messages)
post.set_form_data("To" => "+14155550100", "From" => "+14155550199", "Body" => "Hello from Ruby")
get = Net::HTTP::Get.new("#{messages}?PageSize=20&To=%2B14155550100")
Net::HTTP.start("api.twilio.com", 443, use_ssl: true, open_timeout: 10, read_timeout: 20) do |http|
  [post, get].each do |request|
    request.basic_auth(ENV.fetch("TWILIO_API_KEY"), ENV.fetch("TWILIO_API_SECRET"))
    response = http.request(request)
    puts "#{request.method} #{response.code}#{http.proxy? ? " via #{http.proxy_address}" : " DIRECT"}"
    unless response.is_a?(Net::HTTPSuccess)
      puts response.body
      exit 1
    end
  end
end
