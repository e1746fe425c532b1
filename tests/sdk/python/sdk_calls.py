#!/usr/bin/env python3
"""Four calls with the unmodified twilio-python SDK, for pkcv-proxy's end-to-end tests.

Default mode (through pkcv-proxy):
    TWILIO_API_KEY (SK...), TWILIO_API_SECRET, TWILIO_ACCOUNT_SID (AC...)
    HTTPS_PROXY=http://127.0.0.1:PORT        read by requests, not by this script
    REQUESTS_CA_BUNDLE=/path/proxy-ca.pem     read by requests, not by this script

PKCV_VALIDATION_CLIENT=1 (twilio-python signs by itself, straight to the stand-in, no proxy):
    the three variables above, plus
    TWILIO_CREDENTIAL_SID (CR...), TWILIO_PRIVATE_KEY_FILE (PEM),
    PKCV_STANDIN_ADDR=127.0.0.1:PORT          where the stand-in listens
    REQUESTS_CA_BUNDLE=/path/standin-ca.pem   the stand-in's CA (see _validation_client)

Prints one JSON line per call and exits 1 at the first call that raises.
"""
import json
import os
import sys

from twilio.rest import Client

TO = "+14155550100"
FROM = "+14155550199"
BODY = "Hello from pkcv-proxy"
# The accounts.list filter; the ValidationClient test overrides it (see tests/it/sdk.rs).
FRIENDLY_NAME = os.environ.get("PKCV_FRIENDLY_NAME", "with space")


def emit(mode, call, ok, detail):
    line = {"call": call, "ok": ok, "mode": mode, "detail": detail}
    print(json.dumps(line, default=str), flush=True)


def run_calls(client, mode):
    """Returns normally if all four calls succeed; exits 1 on the first exception."""
    call = "messages.create"
    try:
        message = client.messages.create(to=TO, from_=FROM, body=BODY)
        emit(mode, call, True, {"sid": message.sid, "status": message.status})

        call = "accounts.list"
        accounts = client.api.v2010.accounts.list(friendly_name=FRIENDLY_NAME, limit=2)
        emit(mode, call, True, {"sids": [a.sid for a in accounts]})

        call = "credentials.public_key.list"
        keys = client.accounts.v1.credentials.public_key.list()
        emit(mode, call, True, {"sids": [k.sid for k in keys]})

        call = "messages.delete"
        deleted = client.messages(message.sid).delete()
        emit(mode, call, deleted is True, {"deleted": deleted})
        if deleted is not True:
            sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - report whatever the SDK raised
        emit(mode, call, False, "{}: {}".format(type(exc).__name__, exc))
        sys.exit(1)


def _validation_client(account_sid, api_key):
    """twilio-python's own PKCV signer, aimed at the local stand-in.

    How it is aimed, and why (twilio 9.13.0, requests 2.34):
    - Client(edge=, region=) only rewrites the host name to api.EDGE.REGION.twilio.com; it
      cannot name 127.0.0.1 or a port.
    - Setting client.api.base_url / client.accounts.base_url to https://127.0.0.1:PORT works,
      but then ValidationClient sets (and signs) `Host: 127.0.0.1:PORT`, not api.twilio.com.
    - So the URLs stay https://api.twilio.com/... and https://accounts.twilio.com/...; a
      requests transport adapter mounted on the ValidationClient's own session only changes
      where the TCP connection goes (PKCV_STANDIN_ADDR). Host (set and signed by
      ValidationClient before sending), TLS SNI and the certificate check keep the Twilio name.
    - ValidationClient calls session.send() directly, which honours HTTPS_PROXY but NOT
      REQUESTS_CA_BUNDLE (only Session.request() merges that), so we hand the bundle to the
      session explicitly.
    """
    from requests.adapters import HTTPAdapter
    from twilio.http.validation_client import ValidationClient

    stand_in_host, _, stand_in_port = os.environ["PKCV_STANDIN_ADDR"].rpartition(":")

    class StandInAdapter(HTTPAdapter):
        def build_connection_pool_key_attributes(self, request, verify, cert=None):
            host_params, pool_kwargs = super().build_connection_pool_key_attributes(
                request, verify, cert
            )
            twilio_host = host_params["host"]
            host_params["host"] = stand_in_host
            host_params["port"] = int(stand_in_port)
            pool_kwargs["server_hostname"] = twilio_host  # SNI
            pool_kwargs["assert_hostname"] = twilio_host  # certificate name check
            return host_params, pool_kwargs

    with open(os.environ["TWILIO_PRIVATE_KEY_FILE"]) as f:
        private_key = f.read()
    client = ValidationClient(
        account_sid, api_key, os.environ["TWILIO_CREDENTIAL_SID"], private_key
    )
    client.session.mount("https://", StandInAdapter())
    if os.environ.get("REQUESTS_CA_BUNDLE"):
        client.session.verify = os.environ["REQUESTS_CA_BUNDLE"]
    return client


def main():
    api_key = os.environ["TWILIO_API_KEY"]
    api_secret = os.environ["TWILIO_API_SECRET"]
    account_sid = os.environ["TWILIO_ACCOUNT_SID"]

    if os.environ.get("PKCV_VALIDATION_CLIENT") == "1":
        http_client = _validation_client(account_sid, api_key)
        client = Client(api_key, api_secret, account_sid, http_client=http_client)
        run_calls(client, "validation_client")
    else:
        run_calls(Client(api_key, api_secret, account_sid), "proxy")


if __name__ == "__main__":
    main()
