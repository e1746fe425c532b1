#!/usr/bin/env node
// Four calls with the unmodified twilio-node SDK, for pkcv-proxy's end-to-end tests.
//
//   TWILIO_API_KEY (SK...), TWILIO_API_SECRET, TWILIO_ACCOUNT_SID (AC...)
//   HTTP_PROXY=http://127.0.0.1:PORT      twilio-node 5.x reads ONLY this one (upper case):
//                                         RequestClient builds an HttpsProxyAgent from it and
//                                         passes `proxy: false` to axios, so HTTPS_PROXY,
//                                         https_proxy and NO_PROXY are all ignored.
//   NODE_EXTRA_CA_CERTS=/path/proxy-ca.pem  read by Node at start-up; the TLS connection inside
//                                         the CONNECT tunnel uses Node's default trust store,
//                                         which includes it. TWILIO_CA_BUNDLE is NOT used
//                                         when HTTP_PROXY is set.
//
// Prints one JSON line per call and exits 1 at the first call that rejects.
"use strict";

const twilio = require("twilio");

const TO = "+14155550100";
const FROM = "+14155550199";
const BODY = "Hello from pkcv-proxy";

function emit(call, ok, detail) {
  console.log(JSON.stringify({ call, ok, mode: "proxy", detail }));
}

function describe(err) {
  if (!err) return String(err);
  // RestException (a non-2xx answer) carries the HTTP status and Twilio's error code.
  const extra = err.status !== undefined ? ` (status ${err.status}, code ${err.code})` : "";
  return `${err.name}: ${err.message}${extra}`;
}

async function main() {
  let call = "messages.create";
  try {
    const client = twilio(process.env.TWILIO_API_KEY, process.env.TWILIO_API_SECRET, {
      accountSid: process.env.TWILIO_ACCOUNT_SID,
    });
    const message = await client.messages.create({ to: TO, from: FROM, body: BODY });
    emit(call, true, { sid: message.sid, status: message.status });

    call = "accounts.list";
    const accounts = await client.api.v2010.accounts.list({ friendlyName: "with space", limit: 2 });
    emit(call, true, { sids: accounts.map((a) => a.sid) });

    call = "credentials.public_key.list";
    const keys = await client.accounts.v1.credentials.publicKey.list();
    emit(call, true, { sids: keys.map((k) => k.sid) });

    call = "messages.delete";
    const deleted = await client.messages(message.sid).remove();
    emit(call, deleted === true, { deleted });
    if (deleted !== true) process.exitCode = 1;
  } catch (err) {
    emit(call, false, describe(err));
    process.exitCode = 1;
  }
}

main();
