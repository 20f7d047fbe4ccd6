//! Validation names every bad field: data-driven checks with expected error lists.
#![allow(clippy::unwrap_used)]

use expect_test::{expect, Expect};
use handover_events::{Event, EventData};
use serde_json::json;

fn check(input: serde_json::Value, expect: Expect) {
    let actual = match Event::from_json(input) {
        Ok(e) => format!("ok {}", e.to_json()),
        Err(errs) => errs
            .0
            .iter()
            .map(|e| format!("{}: {}\n", e.pointer, e.message))
            .collect(),
    };
    expect.assert_eq(&actual);
}

fn base(t: &str, data: serde_json::Value) -> serde_json::Value {
    json!({"specversion":"1.0","id":"e1","source":"urn:ods:RX1:pas","type":t,"subject":"9434765919","time":"2026-11-20T09:14:00Z","data":data})
}

#[test]
fn a_valid_event_is_normalised() {
    check(
        json!({"specversion":"1.0","id":"e1","source":"urn:ods:RX1:pas","type":"handover.discharge.admitted.v1",
               "subject":"943 476 5919","time":"2026-07-20 09:14","data":{"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-07-20T09:14:00","unknown_field":1}}),
        expect![[
            r#"ok {"data":{"admitted_at":"2026-07-20T09:14:00+01:00","encounter_id":"E1","site":"RX1CC"},"datacontenttype":"application/json","dataschema":"schemas/handover.discharge.admitted.v1.json","id":"e1","source":"urn:ods:RX1:pas","specversion":"1.0","subject":"9434765919","time":"2026-07-20T09:14:00+01:00","type":"handover.discharge.admitted.v1"}"#
        ]],
    );
}

#[test]
fn every_envelope_problem_is_listed() {
    check(
        json!({"specversion":"0.3","id":"","type":"handover.discharge.admitted.v9","subject":"9434765918","time":"yesterday","data":{}}),
        expect![[r#"
            /specversion: unsupported CloudEvents version "0.3": only "1.0"
            /id: must not be empty
            /source: is required
            /type: unknown event type "handover.discharge.admitted.v9": not in the Handover catalogue
            /subject: must be the person's NHS number: the NHS number's check digit is wrong (Modulus 11)
            /time: not a date-time: expected RFC 3339, e.g. 2026-11-20T09:14:00Z (no offset means UK local time)
        "#]],
    );
}

#[test]
fn a_subject_that_is_not_an_nhs_number_is_named_once() {
    // Not also "is required": it was sent.
    check(
        json!({"specversion":"1.0","id":"e1","source":"urn:ods:RX1:pas","type":"handover.discharge.admitted.v1",
               "subject":"4831200035","time":"2026-11-20T09:14:00Z","data":{"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}}),
        expect![[r#"
            /subject: must be the person's NHS number: the NHS number's check digit is wrong (Modulus 11)
        "#]],
    );
    // Left out, it is required (no data.local_id names the person either).
    check(
        json!({"specversion":"1.0","id":"e1","source":"urn:ods:RX1:pas","type":"handover.discharge.admitted.v1",
               "time":"2026-11-20T09:14:00Z","data":{"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}}),
        expect![[r#"
            /subject: is required (the NHS number) unless data.local_id names the person
        "#]],
    );
}

#[test]
fn every_data_problem_is_listed_with_its_field() {
    check(
        base(
            "handover.discharge.admitted.v1",
            json!({"site": 7, "admitted_at": "2026-11-20T09:14:00Z", "admission_method": "ambulance"}),
        ),
        expect![[r#"
            /data/admission_method: "ambulance" is not one of ["emergency","elective","maternity","transfer","other",null]
            /data/site: 7 is not of type "string"
            /data: "encounter_id" is a required property
        "#]],
    );
    check(
        base(
            "handover.discharge.pathway-assigned.v1",
            json!({"encounter_id": "E1", "pathway": 4}),
        ),
        expect![[r#"
            /data/pathway: 4 is greater than the maximum of 3
        "#]],
    );
    check(
        base(
            "handover.person.nhs-number-changed.v1",
            json!({"previous_nhs_number": "9434765918"}),
        ),
        expect![[r#"
            /data: the NHS number's check digit is wrong (Modulus 11)
        "#]],
    );
    check(
        base(
            "handover.discharge.ready-date-recorded.v1",
            json!({"encounter_id": "E1", "discharge_ready_date": "2026-02-30"}),
        ),
        expect![[r#"
            /data: not a date: expected YYYY-MM-DD
        "#]],
    );
}

#[test]
fn a_person_must_be_named_by_nhs_number_or_local_id() {
    let mut ev = base(
        "handover.referral.accepted.v1",
        json!({"referral_id": "R1"}),
    );
    ev.as_object_mut().unwrap().remove("subject");
    check(
        ev.clone(),
        expect![[r#"
            /subject: is required (the NHS number) unless data.local_id names the person
        "#]],
    );
    ev["data"]["local_id"] = json!({"system": "urn:gss:E08000035:mosaic:person", "value": "MOS-1"});
    let e = Event::from_json(ev).unwrap();
    assert!(matches!(e.data, EventData::ReferralAccepted(_)));
    assert!(matches!(
        e.person(),
        Some(handover_events::PersonRef::Local(_))
    ));
}

#[test]
fn organisation_codes_and_verification_statuses_are_read_in_their_canonical_form() {
    check(
        base(
            "handover.referral.sent.v1",
            json!({"referral_id":"R1","to_council":" e08000035","from_org":"rx1"}),
        ),
        expect![[
            r#"ok {"data":{"from_org":"RX1","referral_id":"R1","to_council":"E08000035"},"datacontenttype":"application/json","dataschema":"schemas/handover.referral.sent.v1.json","id":"e1","source":"urn:ods:RX1:pas","specversion":"1.0","subject":"9434765919","time":"2026-11-20T09:14:00Z","type":"handover.referral.sent.v1"}"#
        ]],
    );
    check(
        base(
            "handover.referral.sent.v1",
            json!({"referral_id":"R1","to_council":"Leeds","from_org":"??"}),
        ),
        expect![[r#"
            /data/from_org: "??" does not match "^ *[A-Za-z0-9]{3,9} *$"
            /data/to_council: "Leeds" does not match "^ *[EeWwSsNn][0-9]{8} *$"
        "#]],
    );
    check(
        base(
            "handover.person.identified.v1",
            json!({"nhs_number_status":"1","local_ids":[{"system":"s","value":"v"}],"postcode":"ls6 4ab"}),
        ),
        expect![[
            r#"ok {"data":{"local_ids":[{"system":"s","value":"v"}],"nhs_number_status":"01","postcode":"LS6 4AB"},"datacontenttype":"application/json","dataschema":"schemas/handover.person.identified.v1.json","id":"e1","source":"urn:ods:RX1:pas","specversion":"1.0","subject":"9434765919","time":"2026-11-20T09:14:00Z","type":"handover.person.identified.v1"}"#
        ]],
    );
    check(
        base(
            "handover.person.identified.v1",
            json!({"nhs_number_status":"99","local_ids":[{"system":"s","value":"v"}]}),
        ),
        expect![[r#"
            /data/nhs_number_status: "99" does not match "^0?[1-8]$"
        "#]],
    );
}

#[test]
fn an_nhs_number_cannot_replace_itself() {
    check(
        base(
            "handover.person.nhs-number-changed.v1",
            json!({"previous_nhs_number":"943 476 5919"}),
        ),
        expect![[r#"
            /data/previous_nhs_number: is the subject's own NHS number: a number cannot replace itself
        "#]],
    );
}

#[test]
fn data_sent_as_base64_json_is_the_same_data_and_anything_else_is_named() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let with = |data_base64: serde_json::Value| {
        let mut e = base(
            "handover.discharge.admitted.v1",
            json!({"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}),
        );
        let obj = e.as_object_mut().unwrap();
        obj.remove("data");
        obj.insert("data_base64".into(), data_base64);
        e
    };
    // JSON format 3.1.1: the same event as with data, stored with data
    let plain = Event::from_json(base(
        "handover.discharge.admitted.v1",
        json!({"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}),
    ))
    .unwrap();
    let encoded = json!(b64(
        r#"{"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}"#
    ));
    assert_eq!(Event::from_json(with(encoded.clone())).unwrap(), plain);
    // unpadded, or broken over lines by a MIME encoder, it is still base64
    let unpadded = encoded.as_str().unwrap().trim_end_matches('=').to_string();
    assert_eq!(Event::from_json(with(json!(unpadded))).unwrap(), plain);
    let wrapped: String = encoded
        .as_str()
        .unwrap()
        .as_bytes()
        .chunks(20)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n");
    assert_eq!(Event::from_json(with(json!(wrapped))).unwrap(), plain);
    // the URL-safe alphabet (RFC 4648 section 5), which some encoders use
    let data = r#"{"encounter_id":"E1>>?","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}"#;
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data);
    assert!(
        url_safe.contains('-') || url_safe.contains('_'),
        "{url_safe}"
    );
    let e = Event::from_json(with(json!(url_safe))).unwrap();
    assert!(e
        .to_json()
        .to_string()
        .contains(r#""encounter_id":"E1>>?""#));
    // a stored event read back is the same either way
    let stored = serde_json::to_vec(&with(encoded.clone())).unwrap();
    assert_eq!(Event::from_stored(&stored).unwrap(), plain);

    check(
        with(json!("not base64!")),
        expect![[r#"
            /data_base64: is not valid base64 (RFC 4648, standard or URL-safe alphabet, padding optional)
        "#]],
    );
    check(
        with(json!(b64("[1,2]"))),
        expect![[r#"
            /data_base64: must decode to a JSON object (the event's data), not another JSON value
        "#]],
    );
    check(
        with(json!(b64("%PDF-1.7"))),
        expect![[r#"
            /data_base64: must decode to a JSON object (the event's data): expected value at line 1 column 1
        "#]],
    );
    check(
        with(json!(42)),
        expect![[r#"
            /data_base64: must be a string (base64)
        "#]],
    );
    // what is wrong inside the decoded data is named under data_base64, which was sent
    check(
        with(json!(b64(
            r#"{"site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}"#
        ))),
        expect![[r#"
            /data_base64: decoded data: "encounter_id" is a required property
        "#]],
    );
    let mut both = with(encoded);
    both["data"] = json!({"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"});
    check(
        both,
        expect![[r#"
            /data_base64: must not be given with data: send the data once, as data (JSON) or data_base64
        "#]],
    );
}

#[test]
fn control_characters_in_source_or_id_are_refused_at_intake_but_read_back_when_stored() {
    let mut e = base(
        "handover.discharge.admitted.v1",
        json!({"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}),
    );
    e["source"] = json!("urn:ods:RX1:pas\u{1f}x");
    e["id"] = json!("e1\u{85}");
    check(
        e.clone(),
        expect![[r#"
            /id: must not contain the character U+0085 (CloudEvents 1.0 String: no control characters or noncharacters)
            /source: must not contain the character U+001F (CloudEvents 1.0 String: no control characters or noncharacters)
        "#]],
    );
    // An event stored before the check is still read back.
    let stored = serde_json::to_vec(&e).unwrap();
    assert!(Event::from_stored(&stored).is_ok());
}
