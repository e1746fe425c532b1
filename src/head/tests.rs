use super::*;

#[test]
fn a_warn_limit_writes_one_line_a_second_and_counts_the_rest() {
    let limit = WarnLimit::new();
    assert_eq!(limit.allow_at(100), Some(0));
    for _ in 0..5 {
        assert_eq!(limit.allow_at(100), None);
    }
    assert_eq!(limit.allow_at(101), Some(5));
    assert_eq!(limit.allow_at(102), Some(0));
}

fn refused(head: &[u8]) -> Option<Refusal> {
    check(head).err()
}

#[test]
fn heads_are_checked_as_hyper_would_and_stricter_on_framing() {
    let ok = b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
    assert_eq!(
        check(ok),
        Ok(Head {
            connect: false,
            body: BodyLength::Length(3)
        })
    );
    assert_eq!(
        check(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").map(|h| h.connect),
        Ok(true)
    );
    for (head, reason) in [
        (
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            REASONS[5],
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", REASONS[6]),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            REASONS[7],
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            REASONS[8],
        ),
        (b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", REASONS[4]),
        (b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", REASONS[3]),
        (b"GET /a\x01 HTTP/1.1\r\n\r\n", REASONS[3]),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", REASONS[1]),
        (b"\x16\x03\x01\x00\xa5\r\n\r\n", REASONS[2]),
        (b"GET / HTTP/9.9\r\n\r\n", REASONS[0]),
        (b"GET http://[bad/ HTTP/1.1\r\n\r\n", REASONS[11]),
        (b"GET {x} HTTP/1.1\r\n\r\n", REASONS[11]),
        (b"GET http:///x HTTP/1.1\r\n\r\n", REASONS[11]),
    ] {
        assert_eq!(
            refused(head),
            Some(Refusal::Malformed(reason)),
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
    let many: Vec<u8> = [
        b"GET / HTTP/1.1\r\n".to_vec(),
        (0..150)
            .flat_map(|i| format!("X-{i}: 1\r\n").into_bytes())
            .collect(),
        b"\r\n".to_vec(),
    ]
    .concat();
    assert_eq!(refused(&many), Some(Refusal::TooLarge(REASONS[10])));
}

#[test]
fn markers_round_trip_and_cannot_be_forged() {
    for refusal in [
        Refusal::Malformed(REASONS[5]),
        Refusal::TooLarge(REASONS[9]),
    ] {
        let marker = marker_request(refusal);
        let mut fields = [httparse::EMPTY_HEADER; 8];
        let mut request = httparse::Request::new(&mut fields);
        assert!(request.parse(&marker).unwrap().is_complete());
        let mut headers = HeaderMap::new();
        for field in request.headers.iter() {
            headers.insert(
                http::HeaderName::from_bytes(field.name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(field.value).unwrap(),
            );
        }
        assert_eq!(super::refusal(&headers), Some(refusal));
    }
    let mut forged = HeaderMap::new();
    forged.insert(MARKER, http::HeaderValue::from_static("0000 M5"));
    assert_eq!(super::refusal(&forged), None);
}

/// Everything the framer hands on for `input` (fed in pieces of `step` bytes), and how
/// it ends.
fn frame(input: &[u8], step: usize, in_tunnel: bool) -> (Vec<u8>, Next) {
    let mut framer = Framer::new(in_tunnel);
    let mut out = Vec::new();
    let mut pieces = input.chunks(step.max(1));
    loop {
        match framer.step() {
            Next::HandOn(bytes) => out.extend_from_slice(&bytes),
            Next::NeedMore => match pieces.next() {
                Some(piece) => framer.received(piece),
                None => framer.end_of_stream(),
            },
            Next::PassThrough => {
                // From here the stream is read straight from the client.
                out.extend(pieces.flatten());
                return (out, Next::PassThrough);
            }
            other => return (out, other),
        }
    }
}

#[test]
fn every_head_after_a_body_is_checked() {
    let good = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\n\r\n";
    let bad = b"POST /d HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    for step in [1, 2, 7, 4096] {
        let (out, end) = frame(good, step, false);
        assert_eq!((out.as_slice(), end), (&good[..], Next::PassThrough));
        let input = [&good[..], bad].concat();
        let (out, end) = frame(&input, step, false);
        assert_eq!(end, Next::Stop, "step {step}");
        assert!(out.starts_with(good));
        assert_eq!(
            &out[good.len()..],
            &marker_request(Refusal::Malformed(REASONS[8]))[..]
        );
    }
    // A blank line of LF then CRLF ends a head for httparse, so it does here: the head
    // after it is checked, not handed on as part of the first.
    let mixed = b"GET /a HTTP/1.1\r\nHost: a\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (out, end) = frame(mixed, 4096, false);
    assert_eq!(end, Next::Stop);
    assert!(out.starts_with(b"GET /a HTTP/1.1\r\nHost: a\n\r\nGET / HTTP/1.1\r\n"));
    // A chunk size hyper fails on: handed on through that byte, then the end.
    let broken = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /smuggled HTTP/1.1\r\n\r\n";
    let (out, end) = frame(broken, 3, false);
    assert_eq!(end, Next::End);
    assert!(
        out.ends_with(b"\r\n\r\nz"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // Inside a tunnel an h2 preface opens the stream to h2; elsewhere it is refused.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_eq!(
        frame(preface, 5, true),
        (preface.to_vec(), Next::PassThrough)
    );
    assert_eq!(frame(preface, 5, false).1, Next::Stop);
    // A head of 64 KiB and one byte is refused even when it arrives whole.
    let long = [
        b"GET / HTTP/1.1\r\nX: ".to_vec(),
        vec![b'a'; MAX_HEAD_BYTES],
        b"\r\n\r\n".to_vec(),
    ]
    .concat();
    let (out, end) = frame(&long, 1 << 20, false);
    assert_eq!(end, Next::Stop);
    assert_eq!(out, marker_request(Refusal::TooLarge(REASONS[9])));
}
