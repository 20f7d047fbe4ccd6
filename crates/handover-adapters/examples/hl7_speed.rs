//! The CPU an MLLP message costs the HL7 adapter outside the network and the event log, per
//! stage: `cargo run --release -p handover-adapters --example hl7_speed`. The message is the
//! ADT^A03 `handover bench` sends over MLLP. Each stage is timed over 100,000 messages; the
//! figure printed is the best of 9 rounds (system allocator; the `handover` binary uses
//! mimalloc).

use std::hint::black_box;
use std::time::Instant;

use handover_adapters::hl7::{translate, Hl7Config, Translation};
use handover_hl7::{ack, AckCode, Message};

const A03: &str = "MSH|^~\\&|PAS|RX1|HANDOVER|HANDOVER|20261120113200||ADT^A03|B1-0-123|P|2.4\r\
EVN|A03|20261120113200\r\
PID|1||9434765919^^^NHS^NH~MRN123^^^RX1^MR||EXAMPLE^PAT||19450312\r\
PV1||I|WARD7^^^RX1CC||||||||||||||||ENC-123|||||||||||||||||1|19||||||||20261120113000\r";

const N: u32 = 100_000;

/// Best of 5 rounds of `N` calls of `f`, in µs a call.
fn best(mut f: impl FnMut()) -> f64 {
    (0..9)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..N {
                f();
            }
            started.elapsed().as_secs_f64() * 1e6 / f64::from(N)
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let cfg = Hl7Config::default();
    let msg = Message::parse(A03.as_bytes()).expect("the example message parses");
    let Ok(Translation::Events(events)) = translate(&msg, &cfg) else {
        panic!("the example message maps to events");
    };
    let parse = best(|| {
        black_box(Message::parse(black_box(A03.as_bytes())).ok());
    });
    // A fresh parse each time: translation reads fields, which are split once.
    let parse_translate = best(|| {
        let m = Message::parse(A03.as_bytes()).ok();
        black_box(m.map(|m| translate(&m, &cfg).is_ok()));
    });
    let json = best(|| {
        for e in &events {
            black_box(e.to_json_vec());
        }
    });
    let acked = best(|| {
        black_box(ack(&msg, AckCode::Aa, None, "20261123101500+0000", "HO1-1"));
    });
    let total = parse_translate + json + acked;
    println!("per ADT^A03 message, best of 9 rounds of {N}:");
    println!("  parse          {parse:6.2} µs");
    println!(
        "  + translate    {parse_translate:6.2} µs (parse, then translate reading its fields)"
    );
    println!("  event JSON     {json:6.2} µs");
    println!("  ACK            {acked:6.2} µs");
    println!("  all            {total:6.2} µs (parse and translate, event JSON, ACK)");
}
