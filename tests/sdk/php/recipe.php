<?php
// The PHP recipe of docs/clients.md, run by tests/it/recipes.rs: the curl extension, as
// twilio-php's CurlClient uses it, configured only through the environment (libcurl reads
// https_proxy itself; credentials, if any, in its URL) and curl.cainfo in php.ini (or -d).
// Makes a form POST …/Messages.json and a GET whose query the proxy must normalize; prints
// "METHOD STATUS" per call and exits 1 at the first that is not a 2xx.
$messages = 'https://api.twilio.com/2010-04-01/Accounts/' . getenv('TWILIO_ACCOUNT_SID') . '/Messages.json';
$calls = [
    ['POST', $messages, http_build_query(['To' => '+14155550100', 'From' => '+14155550199', 'Body' => 'Hello from PHP'])],
    ['GET', $messages . '?PageSize=20&To=%2B14155550100', null],
];
foreach ($calls as [$method, $url, $body]) {
    $curl = curl_init($url);
    $options = [
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_USERPWD => getenv('TWILIO_API_KEY') . ':' . getenv('TWILIO_API_SECRET'),
        CURLOPT_CONNECTTIMEOUT => 10,
        CURLOPT_TIMEOUT => 20,
    ];
    if ($body !== null) {
        $options[CURLOPT_POST] = true;
        $options[CURLOPT_POSTFIELDS] = $body;
        $options[CURLOPT_HTTPHEADER] = ['Content-Type: application/x-www-form-urlencoded'];
    }
    curl_setopt_array($curl, $options);
    $response = curl_exec($curl);
    if ($response === false) {
        echo "$method error: " . curl_error($curl) . "\n";
        exit(1);
    }
    $status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
    echo "$method $status\n";
    if ($status < 200 || $status > 299) {
        echo "$response\n";
        exit(1);
    }
    curl_close($curl);
}
