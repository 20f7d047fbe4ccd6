//! CPU time of a journey read from the store alone: no HTTP, no audit, no other process.
//!
//! Projects the benchmark's events (`handover bench`'s generator) into a sled store in a
//! temporary directory, in batches as the runner applies them, then times
//! `Journeys::get` for people taken at random, single-threaded, best of several rounds.
//! Use it to compare builds of the read path (chunks, compression, the typed decode) with
//! less noise than the full benchmark's saturated journey phase.
//!
//! `cargo run --release -p handover --example journey_read -- [events] [people] [reads] [rounds] [cache MiB]`
//! (defaults 200,000 events, 20,000 people, 20,000 reads, 5 rounds, and sled's page cache at
//! `store.cache_mb`'s default).

use std::time::Instant;

use handover::bench::{nhs_for, Gen};
use handover_events::subject::subject_for;
use handover_events::{Event, NhsNumber, PseudonymKey};
use handover_nats::Delivery;
use handover_projections::runner::project_batch;
use handover_projections::Journeys;
use handover_store::Store;
use rand::{Rng, SeedableRng};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.replace(['_', ','], "").parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (events, people, reads, rounds) =
        (arg(1, 200_000), arg(2, 20_000), arg(3, 20_000), arg(4, 5));
    let cache_mb = arg(5, handover::config::StoreConfig::default().cache_mb);
    let dir = tempfile::tempdir()?;
    let store = Store::open_with(dir.path(), cache_mb * 1024 * 1024, false)?;
    let tree = store.tree("journeys")?;
    let key = PseudonymKey::new(b"journey-read-example-key".to_vec())?;
    let journeys = Journeys::new(key.clone());
    let gen = Gen::new(42, people);

    let t = Instant::now();
    let mut position = 0;
    let mut batch = Vec::with_capacity(250);
    let mut buf = Vec::new();
    for i in 0..events {
        buf.clear();
        gen.event(&mut buf, i);
        let event = Event::from_json_slice(&buf).map_err(|e| anyhow::anyhow!("{e}"))?;
        let person = event.person().ok_or_else(|| anyhow::anyhow!("no person"))?;
        batch.push(Delivery {
            sequence: i + 1,
            subject: subject_for(event.event_type(), &key.person_key(&person)),
            payload: event.to_json_vec().into(),
            pending: events - i - 1,
            traceparent: None,
            published: None,
        });
        if batch.len() == 250 || i + 1 == events {
            let p = project_batch(&tree, &journeys, &batch, position).await?;
            anyhow::ensure!(p.parked.is_empty(), "events parked");
            tree.apply(p.tx, p.last)?;
            position = p.last;
            batch.clear();
        }
    }
    tree.flush().await?;
    let took = t.elapsed();
    let mut stored = 0;
    for entry in tree.scan_range(b"", &[0xff]) {
        let (k, v) = entry?;
        stored += k.len() + v.len();
    }
    println!(
        "projected {events} events over {people} people in {:.1} s; keys and values as stored: {:.1} MB; page cache {cache_mb} MiB",
        took.as_secs_f64(),
        stored as f64 / 1e6
    );

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let numbers: Vec<NhsNumber> = (0..reads)
        .map(|_| NhsNumber::parse(&nhs_for(rng.gen_range(0..people))))
        .collect::<Result<_, _>>()?;
    let mut best = f64::INFINITY;
    let mut entries = 0;
    for round in 0..rounds {
        let t = Instant::now();
        entries = 0;
        for nhs in &numbers {
            let j = journeys
                .get(&tree, nhs)?
                .ok_or_else(|| anyhow::anyhow!("a person without a journey"))?;
            entries += j.timeline.len();
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / reads as f64;
        println!("round {round}: {us:.1} µs a read");
        best = best.min(us);
    }
    println!(
        "best of {rounds}: {best:.1} µs a read ({:.1} timeline entries a read)",
        entries as f64 / reads as f64
    );
    Ok(())
}
