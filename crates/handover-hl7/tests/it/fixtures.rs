//! Every fixture in `tests/fixtures/hl7/` parses and its key fields read back.

use handover_hl7::{Message, Precision, Timestamp};

use crate::fixture;

/// NHS number Modulus 11 check (weights 10..2 over the first nine digits).
fn nhs_number_valid(n: &str) -> bool {
    let digits: Vec<u32> = n.chars().filter_map(|c| c.to_digit(10)).collect();
    if digits.len() != 10 || n.len() != 10 {
        return false;
    }
    let sum: u32 = digits[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| d * w)
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    check == digits[9]
}

/// The NHS number: the PID-3 repetition whose assigning authority is `NHS`.
fn nhs_number(msg: &Message) -> Option<&str> {
    msg.segment("PID")?
        .field(3)?
        .repetitions()
        .iter()
        .find(|r| r.component(4).map(|c| c.value()) == Some("NHS"))
        .map(|r| r.value())
}

struct Expected {
    file: &'static str,
    msh9: &'static str,
    control_id: &'static str,
    version: &'static str,
    nhs: &'static str,
    visit: Option<&'static str>,
}

const FIXTURES: &[Expected] = &[
    Expected {
        file: "a01_v2.4.hl7",
        msh9: "ADT^A01^ADT_A01",
        control_id: "RX1-MSG-000101",
        version: "2.4",
        nhs: "9434765919",
        visit: Some("RX1-ENC-0042"),
    },
    Expected {
        file: "a01_v2.3_custom_separators.hl7",
        msh9: "ADT$A01",
        control_id: "RR8-0000777",
        version: "2.3",
        nhs: "9434765870",
        visit: Some("RR8-ENC-9001"),
    },
    Expected {
        file: "a02_v2.5.1.hl7",
        msh9: "ADT^A02^ADT_A02",
        control_id: "RX1-MSG-000205",
        version: "2.5.1",
        nhs: "9434765919",
        visit: Some("RX1-ENC-0042"),
    },
    Expected {
        file: "a03_v2.4.hl7",
        msh9: "ADT^A03^ADT_A03",
        control_id: "RX1-MSG-000342",
        version: "2.4",
        nhs: "9434765919",
        visit: Some("RX1-ENC-0042"),
    },
    Expected {
        file: "a08_v2.4.hl7",
        msh9: "ADT^A08^ADT_A01",
        control_id: "RX1-MSG-000188",
        version: "2.4",
        nhs: "9434765919",
        visit: Some("RX1-ENC-0042"),
    },
    Expected {
        file: "a11_v2.4.hl7",
        msh9: "ADT^A11^ADT_A09",
        control_id: "RX1-MSG-000107",
        version: "2.4",
        nhs: "9999999484",
        visit: Some("RX1-ENC-0043"),
    },
    Expected {
        file: "a13_v2.4.hl7",
        msh9: "ADT^A13^ADT_A01",
        control_id: "RX1-MSG-000351",
        version: "2.4",
        nhs: "9434765919",
        visit: Some("RX1-ENC-0042"),
    },
    Expected {
        file: "a40_v2.4.hl7",
        msh9: "ADT^A40^ADT_A39",
        control_id: "RX1-MSG-000400",
        version: "2.4",
        nhs: "9999999484",
        visit: None,
    },
    Expected {
        file: "a01_crlf_escapes.hl7",
        msh9: "ADT^A01^ADT_A01",
        control_id: "RX1-MSG-000512",
        version: "2.4",
        nhs: "9990000026",
        visit: Some("RX1-ENC-0107"),
    },
    Expected {
        file: "a28_v2.4.hl7",
        msh9: "ADT^A28^ADT_A05",
        control_id: "RX1-MSG-000600",
        version: "2.4",
        nhs: "9990000034",
        visit: None,
    },
];

#[test]
fn every_fixture_is_listed() {
    let dir = format!("{}/../../tests/fixtures/hl7", env!("CARGO_MANIFEST_DIR"));
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".hl7"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|f| f.file.to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn every_fixture_parses_and_key_fields_read_back() {
    for f in FIXTURES {
        let msg = Message::parse(&fixture(f.file)).unwrap_or_else(|e| panic!("{}: {e}", f.file));
        let msh = msg.segment("MSH").unwrap();
        assert_eq!(msh.field(9).unwrap().raw(), f.msh9, "{}", f.file);
        assert_eq!(msg.message_type(), Some("ADT"), "{}", f.file);
        assert_eq!(msg.control_id(), Some(f.control_id), "{}", f.file);
        assert_eq!(msg.version(), Some(f.version), "{}", f.file);
        let nhs = nhs_number(&msg).unwrap_or_else(|| panic!("{}: no NHS number", f.file));
        assert_eq!(nhs, f.nhs, "{}", f.file);
        assert!(nhs_number_valid(nhs), "{}: {nhs} fails Modulus 11", f.file);
        assert_eq!(msg.get("PV1-19"), f.visit, "{}", f.file);
        // Every timestamp in MSH-7 / EVN-2 is valid.
        Timestamp::parse(msg.get("MSH-7").unwrap()).unwrap();
        Timestamp::parse(msg.get("EVN-2").unwrap()).unwrap();
        // Trigger agrees between MSH-9.2 and the file name.
        let trigger = msg.trigger_event().unwrap().to_ascii_lowercase();
        assert!(f.file.starts_with(&trigger), "{}", f.file);
    }
}

#[test]
fn nhs_check_digit_helper() {
    for ok in ["9434765919", "9434765870", "9999999484", "9990000018"] {
        assert!(nhs_number_valid(ok), "{ok}");
    }
    for bad in [
        "9434765918",
        "943476591",
        "94347659190",
        "123456789X",
        "1000000010",
    ] {
        assert!(!nhs_number_valid(bad), "{bad}");
    }
}

#[test]
fn a01_admission_details() {
    let msg = Message::parse(&fixture("a01_v2.4.hl7")).unwrap();
    assert_eq!(msg.get("MSH-4"), Some("RX1"));
    assert_eq!(msg.get("PV1-2"), Some("I"));
    assert_eq!(msg.get("PV1-3.1"), Some("WARD7"));
    assert_eq!(msg.get("PV1-3.4"), Some("RX1CC"));
    assert_eq!(msg.get("PV1-4"), Some("EM"));
    assert_eq!(msg.get("PV1-44"), Some("20240301094500"));
    assert_eq!(msg.get("EVN-2"), Some("20240301101500"));
    assert_eq!(msg.get("PID-5.1"), Some("SMITH"));
    assert_eq!(msg.get("PID-3[2].1"), Some("RX1-100001"));
}

#[test]
fn a02_transfer_details() {
    let msg = Message::parse(&fixture("a02_v2.5.1.hl7")).unwrap();
    assert_eq!(msg.get("PV1-3.1"), Some("WARD9"));
    assert_eq!(msg.get("PV1-6.1"), Some("WARD7"));
    let admit = Timestamp::parse(msg.get("PV1-44").unwrap()).unwrap();
    assert_eq!(admit.offset_minutes, Some(0));
}

#[test]
fn a03_discharge_details() {
    let msg = Message::parse(&fixture("a03_v2.4.hl7")).unwrap();
    assert_eq!(msg.get("PV1-36"), Some("1"));
    assert_eq!(msg.get("PV1-37"), Some("19"));
    let discharged = Timestamp::parse(msg.get("PV1-45").unwrap()).unwrap();
    assert_eq!(
        (
            discharged.year,
            discharged.month,
            discharged.day,
            discharged.hour,
            discharged.minute
        ),
        (2024, 3, 5, 11, 30)
    );
}

#[test]
fn a40_merge_details() {
    let msg = Message::parse(&fixture("a40_v2.4.hl7")).unwrap();
    let prior = msg.segment("MRG").unwrap().field(1).unwrap();
    let old_nhs = prior
        .repetitions()
        .iter()
        .find(|r| r.component(4).map(|c| c.value()) == Some("NHS"))
        .map(|r| r.value())
        .unwrap();
    assert_eq!(old_nhs, "9990000018");
    assert!(nhs_number_valid(old_nhs));
    assert_eq!(msg.get("MRG-1[2].1"), Some("RX1-100077"));
    assert_eq!(msg.get("PV1-19"), None);
}

#[test]
fn v23_custom_separators_details() {
    let msg = Message::parse(&fixture("a01_v2.3_custom_separators.hl7")).unwrap();
    let seps = msg.separators();
    assert_eq!(
        (
            seps.field,
            seps.component,
            seps.repetition,
            seps.escape,
            seps.subcomponent,
            seps.truncation
        ),
        ('#', '$', '%', '!', '&', None)
    );
    assert_eq!(msg.trigger_event(), Some("A01"));
    assert_eq!(msg.get("MSH-9.3"), None);
    assert_eq!(msg.get("PD1-3"), Some("SMITH & JONES SURGERY"));
    assert_eq!(msg.get("PID-11.1.1"), Some("FLAT 2"));
    assert_eq!(msg.get("PID-11.1.2"), Some("THE MALTINGS"));
    let admit = Timestamp::parse(msg.get("PV1-44").unwrap()).unwrap();
    assert_eq!(admit.precision, Precision::Minute);
}

#[test]
fn crlf_escapes_details() {
    let msg = Message::parse(&fixture("a01_crlf_escapes.hl7")).unwrap();
    assert_eq!(msg.get("PID-5.2"), Some("RENÉE"));
    assert_eq!(msg.get("PID-11.1"), Some("FLAT 3&4 ST JOHN'S COURT"));
    assert_eq!(msg.get("PID-11.2"), Some("THE OLD RECTORY\nCHURCH LANE"));
    assert_eq!(msg.get("NK1-2"), Some("HOLMES & CO SOLICITORS"));
    assert_eq!(
        msg.get("ZU1-2"),
        Some("SIDE ROOM REQUIRED|INFECTION CONTROL")
    );
    assert_eq!(msg.get("ZU1-4"), Some("RX1\\ICT"));
    assert_eq!(msg.all_segments().len(), 6);
}
