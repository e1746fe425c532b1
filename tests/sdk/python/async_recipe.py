"""The Python async recipe of docs/clients.md, run by tests/it/recipes.rs: twilio-python's
AsyncTwilioHttpClient (aiohttp). aiohttp ignores HTTPS_PROXY unless its session is made with
trust_env=True, and AsyncTwilioHttpClient makes its own session without it (and never uses its
proxy_url argument), so the recipe gives it one. The CA comes from SSL_CERT_FILE (aiohttp uses
the ssl module's default context; REQUESTS_CA_BUNDLE is requests' alone).

Makes a form POST …/Messages.json through the SDK and a GET whose query the proxy must
normalize through the same client; prints "METHOD STATUS" per call, exits 1 at the first
failure."""

import asyncio
import os
import sys

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client


async def main() -> int:
    key, secret = os.environ["TWILIO_API_KEY"], os.environ["TWILIO_API_SECRET"]
    account = os.environ["TWILIO_ACCOUNT_SID"]
    # The recipe: no session of its own, then one that reads HTTPS_PROXY.
    http_client = AsyncTwilioHttpClient(pool_connections=False)
    http_client.session = aiohttp.ClientSession(trust_env=True)
    async with http_client:
        client = Client(key, secret, account, http_client=http_client)
        try:
            message = await client.messages.create_async(
                to="+14155550100", from_="+14155550199", body="Hello from Python async"
            )
            # create_async raises on anything but a 2xx; the status is for the test's log.
            print("POST", http_client._test_only_last_response.status_code, message.sid)
        except Exception as e:  # the test prints what failed
            print("POST error:", type(e).__name__, e)
            return 1
        url = f"https://api.twilio.com/2010-04-01/Accounts/{account}/Messages.json"
        try:
            response = await client.request_async(
                "GET", url, params={"PageSize": "20", "To": "+14155550100"}
            )
        except Exception as e:
            print("GET error:", type(e).__name__, e)
            return 1
        print("GET", response.status_code)
        if not 200 <= response.status_code <= 299:
            print(response.text)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
