//! The PROXY header parser: any bytes, cut anywhere, never panic, and the
//! verdict never depends on the cut. For every prefix of the data: shorter
//! than a header it is `NeedMore`; from the header's end on, the same
//! header of the same length; once `Invalid`, invalid for every longer
//! prefix; and every input has its verdict by `MAX_HEADER` bytes. The
//! fuzzed cuts decide which prefixes are checked first (as reads would
//! deliver them); every prefix is then checked too. A header made from the
//! data by the encoders (v1 and v2, with the data as TLVs) must parse back.

#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use upcase::proxy::{encode, parse, Header, Parsed, MAX_HEADER, MAX_V2_LENGTH};

/// Checks the verdicts of `data`'s prefixes against the whole's.
fn check_prefixes(data: &[u8]) {
    let whole = parse(data);
    if data.len() >= MAX_HEADER {
        assert_ne!(whole, Parsed::NeedMore, "no verdict by MAX_HEADER bytes");
    }
    let mut first_invalid = None;
    for len in 0..=data.len() {
        let verdict = parse(&data[..len]);
        match (whole, verdict) {
            (Parsed::Header { header, consumed }, v) if len >= consumed => {
                assert_eq!(v, Parsed::Header { header, consumed }, "prefix {len}")
            }
            (Parsed::Header { .. }, v) => assert_eq!(v, Parsed::NeedMore, "prefix {len}"),
            (_, Parsed::Header { .. }) => {
                panic!("prefix {len} is a header, the whole is {whole:?}")
            }
            (_, Parsed::Invalid(_)) => {
                first_invalid.get_or_insert(len);
            }
            (_, Parsed::NeedMore) => {
                assert!(
                    first_invalid.is_none(),
                    "NeedMore at {len} after Invalid at {first_invalid:?}"
                )
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check_prefixes(data);

    // The same bytes after each signature, so that the fuzzer reaches deep
    // into both formats without having to find them.
    for prefix in [
        &b"PROXY "[..],
        b"PROXY TCP4 ",
        b"PROXY TCP6 ",
        &encode::v2_raw(0x21, 0x11, &[])[..12],
    ] {
        let mut framed = prefix.to_vec();
        framed.extend_from_slice(data);
        check_prefixes(&framed);
    }

    // Headers made of the data parse back to what they say.
    if data.len() >= 36 {
        let port = |at: usize| u16::from_be_bytes([data[at], data[at + 1]]);
        let v4 = |at: usize| {
            let ip = Ipv4Addr::from([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            SocketAddr::from((ip, port(at + 4)))
        };
        let v6 = |at: usize| {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&data[at..at + 16]);
            SocketAddr::from((Ipv6Addr::from(octets), port(32 + at / 8)))
        };
        let tlvs = &data[36..data.len().min(36 + MAX_V2_LENGTH - 36)];
        for (source, destination) in [(v4(0), v4(6)), (v6(0), v6(16))] {
            let want = Header::Proxied {
                source,
                destination,
            };
            for header in [
                encode::v1(source, destination),
                encode::v2(source, destination, tlvs),
            ] {
                let mut with_data = header.clone();
                with_data.extend_from_slice(data);
                let consumed = header.len();
                assert_eq!(
                    parse(&with_data),
                    Parsed::Header {
                        header: want,
                        consumed
                    },
                    "{header:?}"
                );
            }
        }
    }
});
