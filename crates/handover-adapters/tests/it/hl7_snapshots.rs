//! Snapshot tests: HL7 message → events (or the ACK error). One line per case; update the
//! snapshots with `UPDATE_EXPECT=1 cargo test -p handover-adapters`.

use expect_test::{expect, Expect};
use handover_adapters::hl7::{translate, Hl7Config, Translation};
use handover_hl7::Message;
use serde_json::json;

use crate::support::{a01, fixture, join, msh, seg};

/// Each event as compact normalised JSON (without the attributes every event has), or the
/// ignored trigger, or `ACK-code error-code location: message`.
fn render(bytes: &[u8], cfg: &Hl7Config) -> String {
    let msg = match Message::parse(bytes) {
        Ok(m) => m,
        Err(e) => return format!("unparseable: {e}"),
    };
    match translate(&msg, cfg) {
        Ok(Translation::Events(events)) => events
            .iter()
            .map(|e| {
                let mut v = e.to_json();
                let o = v.as_object_mut().unwrap();
                for k in ["specversion", "datacontenttype", "dataschema"] {
                    o.remove(k);
                }
                serde_json::to_string(&v).unwrap()
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Ok(Translation::Ignored { trigger }) => format!("ignored {trigger}"),
        Err(e) => {
            let l = &e.location;
            let at = match (l.field, l.repetition) {
                (Some(f), Some(r)) => format!("{}[{}]-{f}[{r}]", l.segment, l.sequence),
                (Some(f), None) => format!("{}[{}]-{f}", l.segment, l.sequence),
                _ => format!("{}[{}]", l.segment, l.sequence),
            };
            format!("{} {} {at}: {}", e.ack.as_str(), e.code.code(), e.message)
        }
    }
}

fn check(fixture_name: &str, expect: Expect) {
    expect.assert_eq(&render(&fixture(fixture_name), &Hl7Config::default()));
}

fn check_msg(segments: &[String], expect: Expect) {
    check_cfg(segments, &Hl7Config::default(), expect);
}

fn check_cfg(segments: &[String], cfg: &Hl7Config, expect: Expect) {
    expect.assert_eq(&render(join(segments).as_bytes(), cfg));
}

/// Replaces the segment called `name` (or removes it with `None`).
fn with(mut segments: Vec<String>, name: &str, new: Option<String>) -> Vec<String> {
    let i = segments.iter().position(|s| s.starts_with(name)).unwrap();
    match new {
        Some(s) => segments[i] = s,
        None => {
            segments.remove(i);
        }
    }
    segments
}

#[test]
fn fixtures() {
    check(
        "a01_v2.4.hl7",
        expect![[r#"
            {"data":{"birth_date":"1945-03-12","family_name":"SMITH","given_name":"JANE","gp_practice":"B86001","local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100001"}],"nhs_number_status":"01","postcode":"LS1 1AA"},"id":"RX1-MSG-000101.b3c57331b194:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T09:45:00Z","type":"handover.person.identified.v1"}
            {"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"WARD7"},"id":"RX1-MSG-000101.b3c57331b194","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T09:45:00Z","type":"handover.discharge.admitted.v1"}"#]],
    );
    check(
        "a01_v2.3_custom_separators.hl7",
        expect![[r#"
            {"data":{"birth_date":"1938-07-04","family_name":"O'BRIEN","given_name":"PATRICK","gp_practice":"B86002","local_ids":[{"system":"urn:ods:RR8:mrn","value":"RR8-555123"}],"nhs_number_status":"02","postcode":"LS6 2AB"},"id":"RR8-0000777.2735b8a91827:person","source":"urn:ods:RR8:legacypas","subject":"9434765870","time":"2024-03-02T08:15:00Z","type":"handover.person.identified.v1"}
            {"data":{"admission_method":"elective","admitted_at":"2024-03-02T08:15:00Z","encounter_id":"RR8-ENC-9001","site":"RR8SJ","ward":"WARD12"},"id":"RR8-0000777.2735b8a91827","source":"urn:ods:RR8:legacypas","subject":"9434765870","time":"2024-03-02T08:15:00Z","type":"handover.discharge.admitted.v1"}"#]],
    );
    check(
        "a01_crlf_escapes.hl7",
        expect![[r#"
            {"data":{"birth_date":"1960-02-29","family_name":"DUBOIS","given_name":"RENÉE","local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100300"}],"nhs_number_status":"01","postcode":"YO1 7HH"},"id":"RX1-MSG-000512.29049d280dba:person","source":"urn:ods:RX1:pas","subject":"9990000026","time":"2024-03-07T22:00:00Z","type":"handover.person.identified.v1"}
            {"data":{"admission_method":"emergency","admitted_at":"2024-03-07T21:45:00Z","encounter_id":"RX1-ENC-0107","site":"RX1CC","ward":"WARD7"},"id":"RX1-MSG-000512.29049d280dba","source":"urn:ods:RX1:pas","subject":"9990000026","time":"2024-03-07T22:00:00Z","type":"handover.discharge.admitted.v1"}"#]],
    );
    check(
        "a02_v2.5.1.hl7",
        expect![[
            r#"{"data":{"at":"2024-03-03T14:00:00Z","encounter_id":"RX1-ENC-0042","previous_ward":"WARD7","ward":"WARD9"},"id":"RX1-MSG-000205.cf2c75447922","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-03T14:00:00Z","type":"handover.discharge.transferred.v1"}"#
        ]],
    );
    check(
        "a03_v2.4.hl7",
        expect![[
            r#"{"data":{"admitted_at":"2024-03-01T09:45:00Z","destination":"usual-residence","discharged_at":"2024-03-05T11:30:00Z","encounter_id":"RX1-ENC-0042","method":1,"site":"RX1CC","ward":"WARD9"},"id":"RX1-MSG-000342.44c854a24473","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-05T11:30:00Z","type":"handover.discharge.discharged.v1"}"#
        ]],
    );
    check(
        "a08_v2.4.hl7",
        expect![[
            r#"{"data":{"birth_date":"1945-03-12","family_name":"SMITH","given_name":"JANE","local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100001"}],"nhs_number_status":"01","postcode":"LS6 3QR"},"id":"RX1-MSG-000188.db9609663504:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-02T16:10:00Z","type":"handover.person.identified.v1"}"#
        ]],
    );
    check(
        "a11_v2.4.hl7",
        expect![[
            r#"{"data":{"encounter_id":"RX1-ENC-0043"},"id":"RX1-MSG-000107.84a951e6984a","source":"urn:ods:RX1:pas","subject":"9999999484","time":"2024-03-01T10:45:00Z","type":"handover.discharge.admission-cancelled.v1"}"#
        ]],
    );
    check(
        "a13_v2.4.hl7",
        expect![[
            r#"{"data":{"encounter_id":"RX1-ENC-0042"},"id":"RX1-MSG-000351.d39cfd439be3","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-05T12:01:00Z","type":"handover.discharge.discharge-cancelled.v1"}"#
        ]],
    );
    check(
        "a28_v2.4.hl7",
        expect![[
            r#"{"data":{"birth_date":"1990-11-15","family_name":"NGUYEN","given_name":"LINH","local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100400"}],"nhs_number_status":"01","postcode":"LS11 5PS"},"id":"RX1-MSG-000600.e3d8d16da625:person","source":"urn:ods:RX1:pas","subject":"9990000034","time":"2024-03-08T10:15:00Z","type":"handover.person.identified.v1"}"#
        ]],
    );
    check(
        "a40_v2.4.hl7",
        expect![[
            r#"{"data":{"previous_nhs_number":"9990000018"},"id":"RX1-MSG-000400.d39d46a2aed4","source":"urn:ods:RX1:pas","subject":"9999999484","time":"2024-03-06T09:00:00Z","type":"handover.person.nhs-number-changed.v1"}"#
        ]],
    );
}

#[test]
fn invalid_nhs_check_digit_is_ae_at_pid_3() {
    let m = with(
        a01("M1"),
        "PID",
        Some(seg("PID", &[(3, "RX1-1^^^RX1^MR~9434765918^^^NHS^NH")])),
    );
    check_msg(&m, expect!["AE 102 PID[1]-3[2]: PID-3 repetition 2 is not a valid NHS number: the NHS number's check digit is wrong (Modulus 11)"]);
}

#[test]
fn nhs_number_marked_by_identifier_type_or_oid_with_spaces() {
    let by_type = with(
        a01("M1"),
        "PID",
        Some(seg("PID", &[(3, "943 476 5919^^^^NH")])),
    );
    check_msg(
        &by_type,
        expect![[
            r#"{"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"WARD7"},"id":"M1.5224788178d3","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#
        ]],
    );
    let by_oid = with(
        a01("M1"),
        "PID",
        Some(seg(
            "PID",
            &[(3, "9434765919^^^&2.16.840.1.113883.2.1.4.1&ISO")],
        )),
    );
    check_msg(
        &by_oid,
        expect![[
            r#"{"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"WARD7"},"id":"M1.21b930fcf1ae","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#
        ]],
    );
}

#[test]
fn missing_pv1_on_a01_is_ae() {
    check_msg(
        &with(a01("M1"), "PV1", None),
        expect!["AE 101 PV1[1]: the PV1 segment is required for this trigger"],
    );
}

#[test]
fn missing_pv1_19_on_a03_is_ae() {
    let mut m = a01("M1");
    m[0] = msh("A03^ADT_A03", "M1");
    m[3] = seg("PV1", &[(2, "I"), (3, "WARD7")]);
    check_msg(
        &m,
        expect!["AE 101 PV1[1]-19: PV1-19 visit number (the encounter id) is required"],
    );
}

#[test]
fn bad_pv1_44_is_ae_naming_the_field() {
    let pv1 = seg("PV1", &[(3, "WARD7"), (19, "ENC-1"), (44, "20241301")]);
    check_msg(
        &with(a01("M1"), "PV1", Some(pv1)),
        expect!["AE 102 PV1[1]-44: PV1-44 is not a valid HL7 date/time: month out of range 1..=12"],
    );
}

#[test]
fn bad_event_time_is_ae_naming_the_field() {
    let evn = seg("EVN", &[(2, "2024-03-01")]);
    check_msg(
        &with(a01("M1"), "EVN", Some(evn)),
        expect![
            "AE 102 EVN[1]-2: EVN-2 is not a valid HL7 date/time: offset must be +HHMM or -HHMM"
        ],
    );
}

#[test]
fn missing_identifiers_is_ae_at_pid_3() {
    let pid = seg("PID", &[(5, "SMITH^JANE")]);
    check_msg(
        &with(a01("M1"), "PID", Some(pid)),
        expect!["AE 101 PID[1]-3: PID-3 holds no patient identifier"],
    );
}

#[test]
fn oru_is_ar_200() {
    let mut m = a01("M1");
    m[0] = "MSH|^~\\&|LAB|RX1|HANDOVER|HANDOVER|20240301101502||ORU^R01|M1|P|2.4".into();
    check_msg(
        &m,
        expect!["AR 200 MSH[1]-9: message type ORU is not supported: only ADT"],
    );
}

#[test]
fn version_2_2_is_ar_203() {
    let mut m = a01("M1");
    m[0] = m[0].replace("|2.4", "|2.2");
    check_msg(
        &m,
        expect!["AR 203 MSH[1]-12: HL7 version 2.2 is not supported: 2.3 or later 2.x"],
    );
}

#[test]
fn later_versions_are_accepted() {
    let mut m = a01("M1");
    m[0] = m[0].replace("|2.4", "|2.8.2");
    m.truncate(3);
    m.push(seg("PV1", &[(19, "E1")]));
    check_msg(
        &m,
        expect![[r#"
            {"data":{"birth_date":"1945-03-12","family_name":"SMITH","given_name":"JANE","local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100001"}],"nhs_number_status":"02","postcode":"LS1 1AA"},"id":"M1.284f6199e34f:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}
            {"data":{"admitted_at":"2024-03-01T10:15:00Z","encounter_id":"E1","site":"RX1"},"id":"M1.284f6199e34f","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#]],
    );
}

#[test]
fn no_nhs_number_uses_the_local_id() {
    let pid = seg(
        "PID",
        &[(3, "RX1-100001^^^RX1^MR~77^^^OLDPAS^PI"), (5, "SMITH^JANE")],
    );
    check_msg(
        &with(a01("M1"), "PID", Some(pid)),
        expect![[r#"
            {"data":{"family_name":"SMITH","given_name":"JANE","local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100001"},{"system":"urn:ods:RX1:oldpas","value":"77"}],"nhs_number_status":"03"},"id":"M1.343829d3041c:person","source":"urn:ods:RX1:pas","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}
            {"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","local_id":{"system":"urn:ods:RX1:mrn","value":"RX1-100001"},"site":"RX1CC","ward":"WARD7"},"id":"M1.343829d3041c","source":"urn:ods:RX1:pas","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#]],
    );
}

#[test]
fn facilities_map_the_source_and_reject_unlisted_senders() {
    let cfg = Hl7Config {
        facilities: [("RX1".to_string(), "RXA".to_string())].into(),
        sites: [("RX1CC".to_string(), "RXA01".to_string())].into(),
        system: Some("epr".into()),
        responsible_council: Some("E08000035".into()),
        ..Hl7Config::default()
    };
    let m = with(
        a01("M1"),
        "PID",
        Some(seg("PID", &[(3, "9434765919^^^NHS")])),
    );
    check_cfg(
        &m,
        &cfg,
        expect![[
            r#"{"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","responsible_council":"E08000035","site":"RXA01","ward":"WARD7"},"id":"M1.fb77f0cdb50e","source":"urn:ods:RXA:epr","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#
        ]],
    );
    let mut other = m.clone();
    other[0] = other[0].replace("|PAS|RX1|", "|PAS|RR8|");
    check_cfg(
        &other,
        &cfg,
        expect!["AR 204 MSH[1]-4: sending facility RR8 is not configured for this receiver"],
    );
}

#[test]
fn a03_codes() {
    let pv1 = |method: &str, dest: &str| {
        seg(
            "PV1",
            &[
                (3, "WARD9"),
                (19, "E1"),
                (36, method),
                (37, dest),
                (45, "20240705113000"),
            ],
        )
    };
    let a03 = |p: String| {
        let mut m = a01("M3");
        m[0] = msh("A03", "M3");
        m[2] = seg("PID", &[(3, "9434765919^^^NHS")]);
        m[3] = p;
        m
    };
    check_msg(
        &a03(pv1("4", "79")),
        expect![[
            r#"{"data":{"destination":"died","discharged_at":"2024-07-05T11:30:00+01:00","encounter_id":"E1","method":4,"site":"RX1","ward":"WARD9"},"id":"M3.559a671de147","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.discharged.v1"}"#
        ]],
    );
    check_msg(
        &a03(pv1("9", "51")),
        expect![[
            r#"{"data":{"destination":"other","discharged_at":"2024-07-05T11:30:00+01:00","encounter_id":"E1","site":"RX1","ward":"WARD9"},"id":"M3.bba8077e03d2","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.discharged.v1"}"#
        ]],
    );
    check_msg(
        &a03(pv1("", "99")),
        expect![[
            r#"{"data":{"discharged_at":"2024-07-05T11:30:00+01:00","encounter_id":"E1","site":"RX1","ward":"WARD9"},"id":"M3.ea0e0c736fe9","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.discharged.v1"}"#
        ]],
    );
}

#[test]
fn a08_with_expected_discharge_date_and_no_local_ids() {
    let mut m = a01("M8");
    m[0] = msh("A08", "M8");
    m[2] = seg("PID", &[(3, "9434765919^^^NHS")]);
    m.push(seg("PV2", &[(9, "20240310")]));
    check_msg(
        &m,
        expect![[
            r#"{"data":{"encounter_id":"RX1-ENC-0042","expected_discharge_date":"2024-03-10"},"id":"M8.aa75e52eba24","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.expected-date-set.v1"}"#
        ]],
    );
    m.pop();
    check_msg(&m, expect!["ignored A08"]);
}

#[test]
fn demographics_with_only_the_nhs_number_are_identified() {
    let m = with(
        a01("M9"),
        "PID",
        Some(seg(
            "PID",
            &[
                (3, "9434765919^^^NHS^NH"),
                (5, "SMITH^JANE"),
                (7, "19410314"),
            ],
        )),
    );
    check_msg(
        &m,
        expect![[r#"
        {"data":{"birth_date":"1941-03-14","family_name":"SMITH","given_name":"JANE","local_ids":[],"nhs_number_status":"02"},"id":"M9.4f4d05779ae6:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}
        {"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"WARD7"},"id":"M9.4f4d05779ae6","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#]],
    );
}

#[test]
fn offsets_are_kept_and_local_times_are_london() {
    let mut m = a01("M1");
    m[1] = seg("EVN", &[(2, "20240701101500")]);
    m[2] = seg("PID", &[(3, "9434765919^^^NHS")]);
    m[3] = seg("PV1", &[(19, "E1"), (44, "20240701094500+0200")]);
    check_msg(
        &m,
        expect![[
            r#"{"data":{"admitted_at":"2024-07-01T09:45:00+02:00","encounter_id":"E1","site":"RX1"},"id":"M1.aa18de6a5e50","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-07-01T10:15:00+01:00","type":"handover.discharge.admitted.v1"}"#
        ]],
    );
}

#[test]
fn a40_with_local_merge_only_is_ignored() {
    let mut m = vec![msh("A40", "M40"), seg("EVN", &[(2, "20240306090000")])];
    m.push(seg("PID", &[(3, "RX1-1^^^RX1^MR")]));
    m.push(seg("MRG", &[(1, "RX1-2^^^RX1^MR")]));
    check_msg(&m, expect!["ignored A40"]);
}

#[test]
fn every_fixture_translation_conforms() {
    let mut names: Vec<_> = std::fs::read_dir(crate::support::fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".hl7"))
        .collect();
    names.sort();
    let mut checked = 0;
    for name in names {
        let msg = Message::parse(&fixture(&name)).unwrap();
        if let Ok(Translation::Events(_)) = translate(&msg, &Hl7Config::default()) {
            handover_adapters::conformance::assert_translation_conforms(|| {
                match translate(&msg, &Hl7Config::default()) {
                    Ok(Translation::Events(events)) => events,
                    other => panic!("{name}: {other:?}"),
                }
            });
            checked += 1;
        }
    }
    assert_eq!(checked, 10, "every fixture yields events");
}

/// The control id of each event built from `segments` (with `cfg`), digest and all.
fn ids(segments: &[String]) -> Vec<String> {
    let msg = Message::parse(join(segments).as_bytes()).unwrap();
    match translate(&msg, &Hl7Config::default()).unwrap() {
        Translation::Events(events) => events.into_iter().map(|e| e.id).collect(),
        Translation::Ignored { trigger } => panic!("ignored {trigger}"),
    }
}

#[test]
fn a_reused_control_id_with_other_content_gives_other_ids_and_a_resend_the_same() {
    let first = ids(&a01("X1"));
    // A resend, even with MSH-7 regenerated, is the same message.
    let mut resent = a01("X1");
    resent[0] = resent[0].replace("20240301101502", "20240301121501");
    assert_ne!(resent, a01("X1"));
    assert_eq!(ids(&resent), first);
    // The same control id on another message (a counter reset) is not a duplicate.
    let mut other = a01("X1");
    other[3] = other[3].replace("RX1-ENC-0042", "RX1-ENC-0099");
    let second = ids(&other);
    assert_eq!(first.len(), 2);
    assert!(first.iter().chain(&second).all(|id| id.starts_with("X1.")));
    assert!(first.iter().all(|id| !second.contains(id)));
}

#[test]
fn local_ids_leave_out_accounts_and_visits_and_keep_their_kind() {
    let pid = seg(
        "PID",
        &[
            (
                3,
                "9434765919^^^NHS^NH~100200^^^RX1^MR~100200^^^RX1^AN~V77^^^^VN~P123^^^^PPN",
            ),
            (5, "SMITH^JANE"),
        ],
    );
    check_msg(
        &with(a01("M1"), "PID", Some(pid)),
        expect![[r#"
            {"data":{"family_name":"SMITH","given_name":"JANE","local_ids":[{"system":"urn:ods:RX1:mrn","value":"100200"},{"system":"urn:ods:RX1:ppn","value":"P123"}],"nhs_number_status":"02"},"id":"M1.b48db0437755:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}
            {"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"WARD7"},"id":"M1.b48db0437755","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#]],
    );
}

#[test]
fn nhs_numbers_marked_as_uk_feeds_mark_them_and_in_pid_2() {
    for (field, value) in [
        (3, "9434765919^^^^NHS"),
        (3, "9434765919^^^RX1^NHS"),
        (3, "9434765919^^^2.16.840.1.113883.2.1.4.1"),
        (2, "9434765919^^^NHS^NH"),
    ] {
        let mut fields = vec![(field, value)];
        if field == 2 {
            fields.push((3, "RX1-100001^^^RX1^MR"));
        }
        let m = with(a01("M1"), "PID", Some(seg("PID", &fields)));
        let msg = Message::parse(join(&m).as_bytes()).unwrap();
        let Translation::Events(events) = translate(&msg, &Hl7Config::default()).unwrap() else {
            panic!("ignored");
        };
        let admitted = events.last().unwrap();
        assert_eq!(
            admitted.subject.map(|n| n.as_string()).as_deref(),
            Some("9434765919"),
            "PID-{field} {value}"
        );
        assert!(admitted.data.to_json().get("local_id").is_none());
    }
    let placeholder = with(
        a01("M1"),
        "PID",
        Some(seg("PID", &[(3, "9999999999^^^NHS^NH")])),
    );
    check_msg(
        &placeholder,
        expect!["AE 102 PID[1]-3[1]: PID-3 repetition 1 is not a valid NHS number: ten identical digits are a placeholder, not an NHS number"],
    );
}

#[test]
fn a06_admits_a12_transfers_back_and_a34_a36_a47_change_the_nhs_number() {
    let mut a06 = a01("M6");
    a06[0] = msh("A06^ADT_A06", "M6");
    let types: Vec<String> = {
        let msg = Message::parse(join(&a06).as_bytes()).unwrap();
        match translate(&msg, &Hl7Config::default()).unwrap() {
            Translation::Events(e) => e
                .iter()
                .map(|e| e.event_type().as_str().to_owned())
                .collect(),
            Translation::Ignored { trigger } => vec![trigger],
        }
    };
    assert_eq!(
        types,
        [
            "handover.person.identified.v1",
            "handover.discharge.admitted.v1"
        ]
    );
    let mut a12 = a01("M12");
    a12[0] = msh("A12^ADT_A12", "M12");
    a12[3] = seg(
        "PV1",
        &[
            (2, "I"),
            (3, "WARD7^^^RX1CC"),
            (6, "WARD9^^^RX1CC"),
            (19, "E1"),
        ],
    );
    check_msg(
        &a12,
        expect![[
            r#"{"data":{"at":"2024-03-01T10:15:00Z","encounter_id":"E1","previous_ward":"WARD9","ward":"WARD7"},"id":"M12.d4fd02507a12","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.transferred.v1"}"#
        ]],
    );
    for trigger in ["A34^ADT_A30", "A36^ADT_A30", "A47^ADT_A30"] {
        let m = vec![
            msh(trigger, "MM"),
            seg("EVN", &[(2, "20240301101500")]),
            seg("PID", &[(3, "9434765919^^^NHS^NH")]),
            seg("MRG", &[(1, "9434765870^^^NHS^NH")]),
        ];
        let msg = Message::parse(join(&m).as_bytes()).unwrap();
        let Translation::Events(events) = translate(&msg, &Hl7Config::default()).unwrap() else {
            panic!("{trigger} ignored");
        };
        assert_eq!(events.len(), 1, "{trigger}");
        assert_eq!(
            events[0].event_type().as_str(),
            "handover.person.nhs-number-changed.v1"
        );
        assert_eq!(
            events[0].data.to_json(),
            serde_json::json!({"previous_nhs_number": "9434765870"})
        );
    }
    // A v2.3 merge naming the prior NHS number in MRG-4 (prior patient id), the prior MRN
    // in MRG-1.
    let m = vec![
        msh("A40^ADT_A39", "M40"),
        seg("EVN", &[(2, "20240301101500")]),
        seg("PID", &[(2, "9434765919^^^NHS^NH"), (3, "A1^^^RX1^MR")]),
        seg("MRG", &[(1, "A0^^^RX1^MR"), (4, "9434765870^^^NHS^NH")]),
    ];
    check_msg(
        &m,
        expect![[
            r#"{"data":{"previous_nhs_number":"9434765870"},"id":"M40.fefea4537d40","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.person.nhs-number-changed.v1"}"#
        ]],
    );
}

#[test]
fn processing_ids_refuse_training_messages_when_configured() {
    let cfg = Hl7Config {
        processing_ids: vec!["P".into()],
        ..Hl7Config::default()
    };
    let mut training = a01("M1");
    training[0] = training[0].replace("|P|", "|T|");
    assert!(training[0].contains("|T|"), "{}", training[0]);
    check_cfg(
        &training,
        &cfg,
        expect!["AR 202 MSH[1]-11: processing id T is not accepted by this receiver (accepted: P)"],
    );
    // Production messages pass, and by default every processing id does.
    assert!(render(join(&a01("M1")).as_bytes(), &cfg).contains("admitted"));
    assert!(render(join(&training).as_bytes(), &Hl7Config::default()).contains("admitted"));
}

#[test]
fn visits_that_are_not_stays_are_ignored() {
    for class in ["O", "P", "R"] {
        let mut m = a01("M1");
        m[3] = m[3].replacen("PV1|1|I|", &format!("PV1|1|{class}|"), 1);
        assert!(m[3].contains(&format!("|{class}|")), "{}", m[3]);
        check_msg(&m, expect!["ignored A01"]);
    }
    for class in ["I", "E", ""] {
        let mut m = a01("M1");
        m[3] = m[3].replacen("PV1|1|I|", &format!("PV1|1|{class}|"), 1);
        assert!(
            render(join(&m).as_bytes(), &Hl7Config::default()).contains("admitted"),
            "{class}"
        );
    }
}

#[test]
fn a_second_msh_refuses_the_frame_whatever_the_trigger() {
    let mut two = a01("B05");
    two.extend(a01("B06"));
    check_msg(&two, expect!["AR 100 MSH[2]: this frame holds more than one message (a second MSH segment): an MLLP frame holds one message, so nothing in it was stored; send each message in a frame of its own"]);
    // An A40's second message would otherwise read as another PID/MRG pair of the merge.
    let a40 = |id: &str| {
        vec![
            msh("A40", id),
            seg("EVN", &[(2, "20240306090000")]),
            seg("PID", &[(3, "9434765919^^^NHS^NH")]),
            seg("MRG", &[(1, "9434765870^^^NHS^NH")]),
        ]
    };
    let mut two = a40("M40");
    two.extend(a40("M41"));
    check_msg(&two, expect!["AR 100 MSH[2]: this frame holds more than one message (a second MSH segment): an MLLP frame holds one message, so nothing in it was stored; send each message in a frame of its own"]);
}

#[test]
fn a_missing_msh_9_11_or_12_is_ar_101() {
    let mut m = a01("V2");
    m[0] = m[0].replace("|ADT^A01^ADT_A01|", "||");
    check_msg(
        &m,
        expect!["AR 101 MSH[1]-9: MSH-9 message type is required"],
    );
    let mut m = a01("V1");
    m[0] = m[0].replace("|P|2.4", "|P|");
    check_msg(
        &m,
        expect!["AR 101 MSH[1]-12: MSH-12 version id is required"],
    );
    // A missing processing id is refused where processing ids are checked, taken otherwise.
    let mut m = a01("V3");
    m[0] = m[0].replace("|P|2.4", "||2.4");
    let cfg = Hl7Config {
        processing_ids: vec!["P".into()],
        ..Hl7Config::default()
    };
    check_cfg(
        &m,
        &cfg,
        expect![
            "AR 101 MSH[1]-11: MSH-11 processing id is required by this receiver (accepted: P)"
        ],
    );
    assert!(render(join(&m).as_bytes(), &Hl7Config::default()).contains("admitted"));
}

#[test]
fn expected_discharge_dates_of_visits_that_are_not_stays_are_not_set() {
    for class in ["P", "O", "R"] {
        let mut m = a01("PA1");
        m[0] = msh("A08", "PA1");
        m[2] = seg("PID", &[(3, "9434765919^^^NHS")]);
        m[3] = m[3].replacen("PV1|1|I|", &format!("PV1|1|{class}|"), 1);
        m.push(seg("PV2", &[(8, "20240310"), (9, "20240315")]));
        check_msg(&m, expect!["ignored A08"]);
    }
    // With demographics, the A08 still updates the person.
    let mut m = a01("PA2");
    m[0] = msh("A08", "PA2");
    m[3] = m[3].replacen("PV1|1|I|", "PV1|1|P|", 1);
    m.push(seg("PV2", &[(9, "20240315")]));
    check_msg(
        &m,
        expect![[
            r#"{"data":{"birth_date":"1945-03-12","family_name":"SMITH","given_name":"JANE","local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100001"}],"nhs_number_status":"02","postcode":"LS1 1AA"},"id":"PA2.81dd8c00ffc4:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}"#
        ]],
    );
}

#[test]
fn expected_discharge_date_on_admission_and_transfer() {
    let mut m = a01("E1");
    m.push(seg("PV2", &[(9, "20240310")]));
    check_msg(
        &m,
        expect![[r#"
        {"data":{"birth_date":"1945-03-12","family_name":"SMITH","given_name":"JANE","local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100001"}],"nhs_number_status":"02","postcode":"LS1 1AA"},"id":"E1.eed9882a4b2b:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}
        {"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"WARD7"},"id":"E1.eed9882a4b2b","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}
        {"data":{"encounter_id":"RX1-ENC-0042","expected_discharge_date":"2024-03-10"},"id":"E1.eed9882a4b2b:expected-date","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.expected-date-set.v1"}"#]],
    );
    let mut a02 = m.clone();
    a02[0] = msh("A02^ADT_A02", "E2");
    a02[2] = seg("PID", &[(3, "9434765919^^^NHS")]);
    check_msg(
        &a02,
        expect![[r#"
        {"data":{"at":"2024-03-01T10:15:00Z","encounter_id":"RX1-ENC-0042","ward":"WARD7"},"id":"E2.17d7c97568d6","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.transferred.v1"}
        {"data":{"encounter_id":"RX1-ENC-0042","expected_discharge_date":"2024-03-10"},"id":"E2.17d7c97568d6:expected-date","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.expected-date-set.v1"}"#]],
    );
    // Not on a discharge (the date is past), and a date that is not one leaves the
    // admission standing without it.
    let mut a03 = a02.clone();
    a03[0] = msh("A03^ADT_A03", "E3");
    let rendered = render(join(&a03).as_bytes(), &Hl7Config::default());
    assert!(!rendered.contains("expected"), "{rendered}");
    let mut partial = a02.clone();
    partial[0] = msh("A01^ADT_A01", "E4");
    *partial.last_mut().unwrap() = seg("PV2", &[(9, "202403")]);
    check_msg(
        &partial,
        expect![[
            r#"{"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"WARD7"},"id":"E4.dec6f85ac658","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#
        ]],
    );
}

#[test]
fn nhs_numbers_under_uk_pas_identifier_spellings() {
    for pid3 in [
        "RX1-402^^^RX1^MR~9434765919^^^^NHSNMBR",
        "RX1-401^^^RX1^MRN~9434765919^^^NHSNBR^NHSNMBR",
        "9434765919^^^NHSNBR",
        "RX1-400^^^RX1^MR~9434765919^^^^NNGBR",
    ] {
        let m = with(a01("M1"), "PID", Some(seg("PID", &[(3, pid3)])));
        let msg = Message::parse(join(&m).as_bytes()).unwrap();
        let Translation::Events(events) = translate(&msg, &Hl7Config::default()).unwrap() else {
            panic!("{pid3}: ignored");
        };
        assert!(
            events
                .iter()
                .all(|e| e.subject.map(|n| n.as_string()).as_deref() == Some("9434765919")),
            "{pid3}"
        );
    }
    // Under these spellings a value that is not an NHS number is a local id, as before.
    let m = with(
        a01("M1"),
        "PID",
        Some(seg("PID", &[(3, "9434765918^^^^NHSNMBR~12345^^^NHSNBR")])),
    );
    check_msg(
        &m,
        expect![[r#"
            {"data":{"local_ids":[{"system":"urn:ods:RX1:nhsnmbr","value":"9434765918"},{"system":"urn:ods:RX1:nhsnbr","value":"12345"}],"nhs_number_status":"03"},"id":"M1.6cc8830e7760:person","source":"urn:ods:RX1:pas","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}
            {"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","local_id":{"system":"urn:ods:RX1:nhsnmbr","value":"9434765918"},"site":"RX1CC","ward":"WARD7"},"id":"M1.6cc8830e7760","source":"urn:ods:RX1:pas","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#]],
    );
}

#[test]
fn trailing_empty_fields_and_components_do_not_change_the_ids() {
    let first = ids(&a01("DUP1"));
    let mut resent = a01("DUP1");
    resent[0].push_str("|||");
    resent[2].push_str("|||");
    resent[2] = resent[2].replace("SMITH^JANE", "SMITH^JANE^^&~");
    resent[3] = resent[3].replace("WARD7^^^RX1CC", "WARD7^^^RX1CC^^");
    assert_eq!(ids(&resent), first);
    // Empty parts in the middle are content: that is another message.
    let mut other = a01("DUP1");
    other[2] = other[2].replace("SMITH^JANE", "SMITH^^JANE");
    assert_ne!(ids(&other), first);
    // A message without trailing delimiters hashes as it did before they were left out:
    // these ids were stored by earlier versions (and the fixture snapshots above pin more).
    expect!["DUP1.539f656574ef:person DUP1.539f656574ef"].assert_eq(&first.join(" "));
}

#[test]
fn control_characters_and_empty_segments_after_line_feeds() {
    let mut m = a01("G17");
    m[2] = m[2].replace("SMITH^JANE", "SMI\u{0}TH^JA\u{b}NE");
    check_msg(
        &m,
        expect![[r#"
        {"data":{"birth_date":"1945-03-12","family_name":"SMITH","given_name":"JANE","local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100001"}],"nhs_number_status":"02","postcode":"LS1 1AA"},"id":"G17.51bdffdd4a03:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}
        {"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"WARD7"},"id":"G17.51bdffdd4a03","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#]],
    );
    let mut m = a01("H16");
    m[2] = seg(
        "PID",
        &[(3, "9434765919^^^NHS^NH"), (5, "SMITH^JANE"), (32, "01")],
    );
    m.insert(3, "PD1".to_owned());
    let lf = m.join("\n") + "\n";
    expect![[r#"
        {"data":{"family_name":"SMITH","given_name":"JANE","local_ids":[],"nhs_number_status":"01"},"id":"H16.8ced4155e288:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}
        {"data":{"admission_method":"emergency","admitted_at":"2024-03-01T09:45:00Z","encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"WARD7"},"id":"H16.8ced4155e288","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.discharge.admitted.v1"}"#]].assert_eq(&render(lf.as_bytes(), &Hl7Config::default()));
}

#[test]
fn a03_method_6_and_7_are_2_padded_destinations_are_read_and_a_discharge_before_admission_is_ae() {
    let a03 = |method: &str, dest: &str, admit: &str| {
        let mut m = a01("M3");
        m[0] = msh("A03", "M3");
        m[2] = seg("PID", &[(3, "9434765919^^^NHS")]);
        m[3] = seg(
            "PV1",
            &[
                (3, "WARD9"),
                (19, "E1"),
                (36, method),
                (37, dest),
                (44, admit),
                (45, "20240705113000"),
            ],
        );
        m
    };
    let data = |m: &[String]| -> serde_json::Value {
        let msg = Message::parse(join(m).as_bytes()).unwrap();
        match translate(&msg, &Hl7Config::default()).unwrap() {
            Translation::Events(e) => e[0].data.to_json(),
            other => panic!("{other:?}"),
        }
    };
    for method in ["6", "7"] {
        assert_eq!(data(&a03(method, "019", ""))["method"], 2);
    }
    assert_eq!(data(&a03("1", "019", ""))["destination"], "usual-residence");
    // Admitted earlier the same day, with the discharge given as a date alone: not before.
    let mut same_day = a03("1", "19", "20240705090000");
    same_day[3] = same_day[3].replace("20240705113000", "20240705");
    assert_eq!(
        data(&same_day)["discharged_at"],
        "2024-07-05T00:00:00+01:00"
    );
    check_msg(
        &a03("1", "19", "20240801090000"),
        expect!["AE 102 PV1[1]-45: PV1-45 (discharge date/time) is before PV1-44 (admit date/time): the stay would end before it began"],
    );
}

#[test]
fn the_legal_name_and_the_nhs_number_status_are_found_among_repetitions() {
    let m = with(
        a01("M9"),
        "PID",
        Some(seg(
            "PID",
            &[
                (3, "9434765919^^^NHS^NH"),
                (5, "~TESS^TESS^^^^^A~LEGAL^THERESA^^^^^L"),
                (32, "AL~01"),
            ],
        )),
    );
    let msg = Message::parse(join(&m).as_bytes()).unwrap();
    let Translation::Events(events) = translate(&msg, &Hl7Config::default()).unwrap() else {
        panic!("events expected");
    };
    let person = events[0].data.to_json();
    assert_eq!(
        (
            &person["family_name"],
            &person["given_name"],
            &person["nhs_number_status"]
        ),
        (&json!("LEGAL"), &json!("THERESA"), &json!("01"))
    );
}

#[test]
fn a31_after_a_trace_links_the_nhs_number_to_the_local_id() {
    // A person admitted under their MRN alone, then traced on PDS: the A31 says both.
    let m = vec![
        msh("A31^ADT_A05", "M31"),
        seg("EVN", &[(1, "A31"), (2, "20240301101500")]),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, "9434765919^^^NHS^NH~RX1-100001^^^RX1^MR"),
                (32, "01"),
            ],
        ),
        seg("PV1", &[(1, "1"), (2, "N")]),
    ];
    check_msg(
        &m,
        expect![[
            r#"{"data":{"local_ids":[{"system":"urn:ods:RX1:mrn","value":"RX1-100001"}],"nhs_number_status":"01"},"id":"M31.de6134afd62b:person","source":"urn:ods:RX1:pas","subject":"9434765919","time":"2024-03-01T10:15:00Z","type":"handover.person.identified.v1"}"#
        ]],
    );
}

#[test]
fn a_resend_that_an_engine_gave_a_character_set_is_a_duplicate() {
    let plain = a01("M18");
    let mut charset = plain.clone();
    charset[0] = format!("{}||||||UNICODE UTF-8", charset[0]);
    assert_eq!(ids(&plain), ids(&charset));
    // MSH-18 and a field after it: still the same as without MSH-18.
    let mut with_19 = plain.clone();
    with_19[0] = format!("{}|||||||EN", with_19[0]);
    let mut both = plain.clone();
    both[0] = format!("{}||||||8859/1|EN", both[0]);
    assert_eq!(ids(&with_19), ids(&both));
    // Other content still tells messages apart.
    let mut other = plain.clone();
    other[0] = format!("{}|||||GBR", other[0]);
    assert_ne!(ids(&plain), ids(&other));
}
