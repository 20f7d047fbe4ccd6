//! How long parsing an ADT^A03 and reading the fields the HL7 adapter reads takes, per
//! message: `cargo run --release -p handover-hl7 --example parse_speed`. The message is the
//! one `handover bench` sends over MLLP. Prints the best of 5 rounds of 200,000 messages.

use std::time::Instant;

use handover_hl7::Message;

const A03: &str = "MSH|^~\\&|PAS|RX1|HANDOVER|HANDOVER|20261120113200||ADT^A03|B1-0-123|P|2.4\r\
EVN|A03|20261120113200\r\
PID|1||9434765919^^^NHS^NH~MRN123^^^RX1^MR||EXAMPLE^PAT||19450312\r\
PV1||I|WARD7^^^RX1CC||||||||||||||||ENC-123|||||||||||||||||1|19||||||||20261120113000\r";

/// The fields a discharge's translation reads.
const READ: &[&str] = &[
    "MSH-9.1",
    "MSH-9.2",
    "MSH-10",
    "MSH-12",
    "MSH-3",
    "MSH-4",
    "EVN-2",
    "PID-3[1].1",
    "PID-3[1].4",
    "PID-3[1].5",
    "PID-3[2].1",
    "PID-3[2].4",
    "PID-3[2].5",
    "PID-5.1",
    "PID-7",
    "PV1-2",
    "PV1-3.1",
    "PV1-3.4",
    "PV1-19",
    "PV1-36",
    "PV1-37",
    "PV1-45",
];

fn main() {
    let paths: Vec<handover_hl7::Path> = READ.iter().filter_map(|p| p.parse().ok()).collect();
    assert_eq!(paths.len(), READ.len(), "every path parses");
    let n = 200_000;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let mut found = 0usize;
        for _ in 0..n {
            let Ok(m) = Message::parse(A03.as_bytes()) else {
                panic!("the example message does not parse");
            };
            found += paths.iter().filter(|p| m.get_path(p).is_some()).count();
        }
        let per = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        assert_eq!(found, READ.len() * n as usize, "every field is present");
        best = best.min(per);
    }
    println!(
        "parse and read {} fields: {best:.2} µs a message (best of 5 rounds of {n})",
        READ.len()
    );
}
