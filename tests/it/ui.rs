//! The web UI in a real browser: headless Chromium driven over WebDriver (chromedriver from
//! Debian's `chromium-driver`, installed by `cargo xtask setup`). Loads the demo week, signs
//! in, opens the delays worklist, follows a person to their journey, and checks what is
//! shown. Screenshots go to `target/ui-screenshots/`.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{ClientBuilder, Locator};
use handover_api::Role;
use handover_events::Event;
use serde_json::json;

use crate::support::{token, Backbone};

struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_chromedriver() -> Driver {
    let bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromedriver not found: run `cargo xtask setup` (installs Debian's chromium and chromium-driver)");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    handover_testkit::wait_until(Duration::from_secs(20), "chromedriver to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Driver { child, port }
}

/// The text of the element `at` finds.
async fn text_of(c: &fantoccini::Client, at: Locator<'_>) -> String {
    c.find(at).await.unwrap().text().await.unwrap()
}

async fn click(c: &fantoccini::Client, at: Locator<'_>) {
    c.find(at).await.unwrap().click().await.unwrap();
}

/// Waits (up to 30 s) for the page to show what `at` finds.
async fn wait_for(c: &fantoccini::Client, at: Locator<'_>) {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(at)
        .await
        .unwrap();
}

fn screenshots_dir() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discharge_team_follows_the_worklist_to_a_journey_in_a_browser() {
    let b = Backbone::start().await;
    let today = handover_events::time::london_today();
    let events: Vec<Event> = handover::demo::demo_week(7, today)
        .into_iter()
        .map(|v| Event::from_json(v).unwrap())
        .collect();
    for chunk in events.chunks(500) {
        b.rt().log.publish(chunk).await.unwrap();
    }
    b.caught_up().await;
    // what the API says, to compare the page with
    let api: serde_json::Value = b
        .http
        .get(format!("{}/v1/worklists/discharge-delays", b.base))
        .bearer_auth(token(Role::DischargeTeam))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = api["total"].as_u64().unwrap();
    assert!(total >= 20, "the demo has people delayed: {total}");
    let first = &api["rows"][0];

    let driver = start_chromedriver();
    let caps = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,1000"]
        }
    });
    let caps = match caps {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    };
    // Plain HTTP to a local chromedriver: no TLS stack needed.
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("connect to chromedriver");
    let shots = screenshots_dir();
    // No page may take long to load. Each page holds a live-update stream;
    // pages left open in the browser's back-forward cache once held all six
    // of its connections to the server, and the eighth page took 60 s.
    c.update_timeouts(TimeoutConfiguration::new(
        None,
        Some(Duration::from_secs(20)),
        None,
    ))
    .await
    .unwrap();

    // Signing in is required
    c.goto(&format!("{}/ui/delays", b.base)).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/ui/login"));
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&token(Role::DischargeTeam))
        .await
        .unwrap();
    click(&c, Locator::Css("form button[type=submit]")).await;
    // The click returns before the form's POST is answered: wait for the
    // page it leads to (a discharge team lands on the worklist), or a `goto`
    // now would race the session cookie and land back on the sign-in page.
    wait_for(&c, Locator::Css("table caption")).await;

    // The worklist
    c.goto(&format!("{}/ui/delays", b.base)).await.unwrap();
    wait_for(&c, Locator::Css("table caption")).await;
    let caption = c
        .find(Locator::Css("table caption"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(caption, format!("{total} people, longest delay first"));
    let rows = c.find_all(Locator::Css("table tbody tr")).await.unwrap();
    assert_eq!(rows.len() as u64, total);
    let first_row = rows[0].text().await.unwrap();
    assert!(
        first_row.contains(first["person"]["nhs_number"].as_str().unwrap()),
        "{first_row}"
    );
    assert!(
        first_row.contains(first["waiting_for"].as_str().unwrap()),
        "{first_row}"
    );
    assert!(
        first_row.contains(&first["days_delayed"].to_string()),
        "{first_row}"
    );
    std::fs::write(shots.join("delays.png"), c.screenshot().await.unwrap()).unwrap();
    // Pages: two rows at a time, then the next two.
    c.goto(&format!("{}/ui/delays?limit=2", b.base))
        .await
        .unwrap();
    let text = text_of(&c, Locator::Css("nav.pager")).await;
    assert!(text.starts_with(&format!("Rows 1–2 of {total}")), "{text}");
    click(&c, Locator::Css("nav.pager a[rel=next]")).await;
    // Only the second page has a link back.
    wait_for(&c, Locator::Css("nav.pager a[rel=prev]")).await;
    let text = text_of(&c, Locator::Css("nav.pager")).await;
    assert!(text.starts_with(&format!("Rows 3–4 of {total}")), "{text}");
    let page2 = c.find_all(Locator::Css("table tbody tr")).await.unwrap();
    assert_eq!(page2.len(), 2);
    assert!(
        page2[0]
            .text()
            .await
            .unwrap()
            .contains(api["rows"][2]["person"]["nhs_number"].as_str().unwrap()),
        "the third row of the worklist heads the second page"
    );
    c.goto(&format!("{}/ui/delays", b.base)).await.unwrap();
    let rows = c.find_all(Locator::Css("table tbody tr")).await.unwrap();

    // Follow the first person: the page asks for a reason first
    rows[0]
        .find(Locator::Css("a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, Locator::Id("r-direct-care")).await;
    let h1 = text_of(&c, Locator::Css("h1")).await;
    assert_eq!(h1, "Why are you opening this record?");
    click(&c, Locator::Id("r-direct-care")).await;
    click(&c, Locator::Css("main form button[type=submit]")).await;

    // The journey: name, stay, and a timeline with hospital and council columns (wait for
    // the navigation: a loaded machine may still show the reason form)
    wait_for(&c, Locator::Css("table.timeline")).await;
    let h1 = text_of(&c, Locator::Css("h1")).await;
    assert_eq!(h1, first["person"]["name"].as_str().unwrap());
    let summary = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(summary.contains(first["discharge_ready_date"].as_str().unwrap()));
    assert!(summary.contains("in hospital"));
    let timeline = c
        .find_all(Locator::Css("table.timeline tbody tr"))
        .await
        .unwrap();
    assert!(timeline.len() >= 4, "timeline has {} rows", timeline.len());
    let hospital_cells = c
        .find_all(Locator::Css("table.timeline td.nhs"))
        .await
        .unwrap();
    let council_cells = c
        .find_all(Locator::Css("table.timeline td.council"))
        .await
        .unwrap();
    assert!(!hospital_cells.is_empty());
    assert!(
        !council_cells.is_empty(),
        "a delayed person past referral has council entries"
    );
    assert_eq!(hospital_cells.len() + council_cells.len(), timeline.len());
    std::fs::write(shots.join("journey.png"), c.screenshot().await.unwrap()).unwrap();

    // Measures render their charts
    c.goto(&format!("{}/ui/measures", b.base)).await.unwrap();
    let charts = c
        .find_all(Locator::Css("figure svg[role=img]"))
        .await
        .unwrap();
    assert_eq!(charts.len(), 3);
    std::fs::write(shots.join("measures.png"), c.screenshot().await.unwrap()).unwrap();

    // A broker's brokerage queue
    c.goto(&format!("{}/ui/brokerage", b.base)).await.unwrap();
    let caption = c
        .find(Locator::Css("table caption"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(caption.ends_with("packages"), "{caption}");
    std::fs::write(shots.join("brokerage.png"), c.screenshot().await.unwrap()).unwrap();
    c.close().await.unwrap();
}
