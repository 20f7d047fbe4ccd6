//! Snapshot tests (expect-test). Regenerate with `UPDATE_EXPECT=1 cargo test -p handover-hl7`
//! and review the diff.

use expect_test::{expect, Expect};
use handover_hl7::{
    ack, ack_salvaged, ack_unparseable, salvage_control_id, AckCode, AckError, ErrorCode,
    ErrorLocation, Message, Timestamp,
};

use crate::{dump, fixture};

fn check(input: &str, expect: Expect) {
    let actual = match Message::parse(input.as_bytes()) {
        Ok(msg) => dump(&msg),
        Err(e) => format!("error: {e}\n"),
    };
    expect.assert_eq(&actual);
}

fn check_ts(input: &str, expect: Expect) {
    let actual = match Timestamp::parse(input) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:09} offset={:?} precision={:?} display={t}",
            t.year,
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second,
            t.nanos,
            t.offset_minutes,
            t.precision
        ),
        Err(e) => format!("error: {e}"),
    };
    expect.assert_eq(&actual);
}

/// Renders an ACK with one segment per line.
fn check_ack(input: &[u8], code: AckCode, error: Option<&AckError>, expect: Expect) {
    let msg = Message::parse(input).unwrap();
    let out = ack(&msg, code, error, "20240301101503", "ACK-0001");
    assert!(out.ends_with('\r') && !out.contains('\n'));
    // The ACK must itself parse, with the original's separators.
    let parsed = Message::parse(out.as_bytes()).unwrap();
    assert_eq!(parsed.separators(), msg.separators());
    assert_eq!(parsed.get("MSA-2"), msg.control_id());
    expect.assert_eq(&out.replace('\r', "\n"));
}

const STANDARD: &str = "MSH|^~\\&|PAS|RX1|HANDOVER|LA|20240301101502||ADT^A01^ADT_A01|MSG0001|P|2.4\r\
PID|1||9434765919^^^NHS^NH~RX1-123456^^^RX1^MR||SMITH^JANE^^^MRS||19450312|F|||1 HIGH ST^^LEEDS^^LS1 1AA\r\
PV1|1|I|WARD7^^^RX1CC|EM\r";

#[test]
fn standard_separators() {
    check(
        STANDARD,
        expect![[r#"
            MSH
              MSH-1 = "|"
              MSH-2 = "^~\\&"
              MSH-3 = "PAS"
              MSH-4 = "RX1"
              MSH-5 = "HANDOVER"
              MSH-6 = "LA"
              MSH-7 = "20240301101502"
              MSH-9.1 = "ADT"
              MSH-9.2 = "A01"
              MSH-9.3 = "ADT_A01"
              MSH-10 = "MSG0001"
              MSH-11 = "P"
              MSH-12 = "2.4"
            PID
              PID-1 = "1"
              PID-3[1].1 = "9434765919"
              PID-3[1].4 = "NHS"
              PID-3[1].5 = "NH"
              PID-3[2].1 = "RX1-123456"
              PID-3[2].4 = "RX1"
              PID-3[2].5 = "MR"
              PID-5.1 = "SMITH"
              PID-5.2 = "JANE"
              PID-5.5 = "MRS"
              PID-7 = "19450312"
              PID-8 = "F"
              PID-11.1 = "1 HIGH ST"
              PID-11.3 = "LEEDS"
              PID-11.5 = "LS1 1AA"
            PV1
              PV1-1 = "1"
              PV1-2 = "I"
              PV1-3.1 = "WARD7"
              PV1-3.4 = "RX1CC"
              PV1-4 = "EM"
        "#]],
    );
}

#[test]
fn repeated_pid3_accessors() {
    let msg = Message::parse(STANDARD.as_bytes()).unwrap();
    assert_eq!(msg.get("PID-3"), Some("9434765919"));
    assert_eq!(msg.get("PID-3[2].4"), Some("RX1"));
    assert_eq!(msg.get("PID-3[2]"), Some("RX1-123456"));
    assert_eq!(msg.get("PID-3[3]"), None);
    assert_eq!(msg.get("PID-3[1].2"), None, "empty component reads as None");
    assert_eq!(msg.get("PID-99"), None);
    assert_eq!(msg.get("PID[2]-3"), None);
    assert_eq!(msg.get("not a path"), None);
    let pid3 = msg.segment("PID").unwrap().field(3).unwrap();
    let nhs = pid3
        .repetitions()
        .iter()
        .find(|r| r.component(4).map(|c| c.value()) == Some("NHS"))
        .map(|r| r.value());
    assert_eq!(nhs, Some("9434765919"));
    assert_eq!(pid3.raw(), "9434765919^^^NHS^NH~RX1-123456^^^RX1^MR");
    assert_eq!(pid3.repetition(2).unwrap().raw(), "RX1-123456^^^RX1^MR");
}

#[test]
fn custom_separators() {
    check(
        "MSH#$%\\&#PAS#RX1#HANDOVER#LA#20240301##ADT$A01#C1#P#2.3\rPID#1##9434765919$$$NHS$NH%X1$$$RX1$MR##O\\S\\BRIEN$PAT&RICK\r",
        expect![[r##"
            MSH
              MSH-1 = "#"
              MSH-2 = "$%\\&"
              MSH-3 = "PAS"
              MSH-4 = "RX1"
              MSH-5 = "HANDOVER"
              MSH-6 = "LA"
              MSH-7 = "20240301"
              MSH-9.1 = "ADT"
              MSH-9.2 = "A01"
              MSH-10 = "C1"
              MSH-11 = "P"
              MSH-12 = "2.3"
            PID
              PID-1 = "1"
              PID-3[1].1 = "9434765919"
              PID-3[1].4 = "NHS"
              PID-3[1].5 = "NH"
              PID-3[2].1 = "X1"
              PID-3[2].4 = "RX1"
              PID-3[2].5 = "MR"
              PID-5.1 = "O$BRIEN"
              PID-5.2.1 = "PAT"
              PID-5.2.2 = "RICK"
        "##]],
    );
}

#[test]
fn custom_escape_character_and_truncation() {
    // MSH|$%!&#| : component '$', repetition '%', escape '!', subcomponent '&',
    // truncation '#' (v2.7-style five encoding characters).
    check(
        "MSH|$%!&#|PAS|RX1|||20240301||ADT$A08|C2|P|2.7\rZU1|a!F!b!S!c!R!d!E!e!T!f!P!g|!X41!!.br!x|back\\slash|!H!hi!N!\r",
        expect![[r#"
            MSH
              MSH-1 = "|"
              MSH-2 = "$%!&#"
              MSH-3 = "PAS"
              MSH-4 = "RX1"
              MSH-7 = "20240301"
              MSH-9.1 = "ADT"
              MSH-9.2 = "A08"
              MSH-10 = "C2"
              MSH-11 = "P"
              MSH-12 = "2.7"
            ZU1
              ZU1-1 = "a|b$c%d!e&f#g"
              ZU1-2 = "A\nx"
              ZU1-3 = "back\\slash"
              ZU1-4 = "hi"
        "#]],
    );
}

#[test]
fn lf_line_endings() {
    check(
        "MSH|^~\\&|PAS|RX1|||20240301||ADT^A03|C3|P|2.4\nEVN|A03|20240301\n\nPV1|1|I|||||||||||||||||RX1-ENC-0042\n",
        expect![[r#"
            MSH
              MSH-1 = "|"
              MSH-2 = "^~\\&"
              MSH-3 = "PAS"
              MSH-4 = "RX1"
              MSH-7 = "20240301"
              MSH-9.1 = "ADT"
              MSH-9.2 = "A03"
              MSH-10 = "C3"
              MSH-11 = "P"
              MSH-12 = "2.4"
            EVN
              EVN-1 = "A03"
              EVN-2 = "20240301"
            PV1
              PV1-1 = "1"
              PV1-2 = "I"
              PV1-19 = "RX1-ENC-0042"
        "#]],
    );
}

#[test]
fn crlf_and_mixed_endings_bom_and_whitespace() {
    check(
        "\u{feff}\r\n  MSH|^~\\&|PAS|RX1|||20240301||ADT^A08|C4|P|2.4\r\nEVN|A08|20240301\r\r\n   \nPID|1||9434765870^^^NHS^NH\r \tPV1|1|O\n\r\n\t",
        expect![[r#"
            MSH
              MSH-1 = "|"
              MSH-2 = "^~\\&"
              MSH-3 = "PAS"
              MSH-4 = "RX1"
              MSH-7 = "20240301"
              MSH-9.1 = "ADT"
              MSH-9.2 = "A08"
              MSH-10 = "C4"
              MSH-11 = "P"
              MSH-12 = "2.4"
            EVN
              EVN-1 = "A08"
              EVN-2 = "20240301"
            PID
              PID-1 = "1"
              PID-3.1 = "9434765870"
              PID-3.4 = "NHS"
              PID-3.5 = "NH"
            PV1
              PV1-1 = "1"
              PV1-2 = "O"
        "#]],
    );
}

#[test]
fn escapes() {
    check(
        "MSH|^~\\&|PAS|RX1|||20240301||ADT^A01|C5|P|2.4\r\
         PID|1||||O\\T\\BRIEN^REN\\XC3A9\\E~D\\XE9\\J\\XC0\\^X||||||FLAT 1\\.br\\HIGH ST^^A\\F\\B\\S\\C\\R\\D\\E\\E|\\H\\BOLD\\N\\|C:\\temp\\x|trailing\\\r",
        expect![[r#"
            MSH
              MSH-1 = "|"
              MSH-2 = "^~\\&"
              MSH-3 = "PAS"
              MSH-4 = "RX1"
              MSH-7 = "20240301"
              MSH-9.1 = "ADT"
              MSH-9.2 = "A01"
              MSH-10 = "C5"
              MSH-11 = "P"
              MSH-12 = "2.4"
            PID
              PID-1 = "1"
              PID-5[1].1 = "O&BRIEN"
              PID-5[1].2 = "RENéE"
              PID-5[2].1 = "DéJÀ"
              PID-5[2].2 = "X"
              PID-11.1 = "FLAT 1\nHIGH ST"
              PID-11.3 = "A|B^C~D\\E"
              PID-12 = "BOLD"
              PID-13 = "C:\\temp\\x"
              PID-14 = "trailing\\"
        "#]],
    );
}

#[test]
fn z_segments_and_repeated_segments() {
    check(
        "MSH|^~\\&|PAS|RX1|||20240301||ADT^A01|C6|P|2.4\rZU1|1|SIDE ROOM|Y\rOBX|1|ST|A||first\rOBX|2|ST|B||second\rZU1|2\r",
        expect![[r#"
            MSH
              MSH-1 = "|"
              MSH-2 = "^~\\&"
              MSH-3 = "PAS"
              MSH-4 = "RX1"
              MSH-7 = "20240301"
              MSH-9.1 = "ADT"
              MSH-9.2 = "A01"
              MSH-10 = "C6"
              MSH-11 = "P"
              MSH-12 = "2.4"
            ZU1[1]
              ZU1[1]-1 = "1"
              ZU1[1]-2 = "SIDE ROOM"
              ZU1[1]-3 = "Y"
            OBX[1]
              OBX[1]-1 = "1"
              OBX[1]-2 = "ST"
              OBX[1]-3 = "A"
              OBX[1]-5 = "first"
            OBX[2]
              OBX[2]-1 = "2"
              OBX[2]-2 = "ST"
              OBX[2]-3 = "B"
              OBX[2]-5 = "second"
            ZU1[2]
              ZU1[2]-1 = "2"
        "#]],
    );
    let msg = Message::parse(b"MSH|^~\\&|A\rZU1|1|X\rZU1|2|Y").unwrap();
    assert_eq!(msg.segments("ZU1").count(), 2);
    assert_eq!(msg.get("ZU1[2]-2"), Some("Y"));
    assert_eq!(msg.segment("ZU1").unwrap().field(2).unwrap().value(), "X");
}

#[test]
fn parse_errors() {
    check(
        "",
        expect![[r#"
        error: message is empty
    "#]],
    );
    check(
        "PID|1||123",
        expect![[r#"
        error: message does not start with an MSH segment
    "#]],
    );
    check(
        "MSH",
        expect![[r#"
            error: invalid field separator in MSH-1: found end of segment
        "#]],
    );
    check(
        "MSH|^~\\|A",
        expect![[r#"
        error: invalid encoding characters "^~\\" in MSH-2: expected 4 or 5 characters
    "#]],
    );
    check(
        "MSH|^~^&|A",
        expect![[r#"
        error: invalid encoding characters "^~^&" in MSH-2: delimiters must all be different
    "#]],
    );
    check(
        "MSH|^~\\&|A\rthis is a stray note line\r",
        expect![[r#"
        error: invalid segment name "this is a stray " on segment 2
    "#]],
    );
}

#[test]
fn v23_ts_with_precision_component() {
    let msg = Message::parse(&fixture("a01_v2.3_custom_separators.hl7")).unwrap();
    let raw = msg.segment("PV1").unwrap().field(44).unwrap().raw();
    check_ts(
        raw,
        expect![[r#"error: malformed timestamp "202403020815$M": expected digits"#]],
    );
    check_ts(
        msg.get("PV1-44").unwrap(),
        expect!["2024-03-02 08:15:00.000000000 offset=None precision=Minute display=202403020815"],
    );
    check_ts(
        "20240302083000^S",
        expect![
            "2024-03-02 08:30:00.000000000 offset=None precision=Second display=20240302083000"
        ],
    );
}

#[test]
fn timestamps() {
    check_ts(
        "20240301101502",
        expect![
            "2024-03-01 10:15:02.000000000 offset=None precision=Second display=20240301101502"
        ],
    );
    check_ts("20240301101502+0100", expect!["2024-03-01 10:15:02.000000000 offset=Some(60) precision=Second display=20240301101502+0100"]);
    check_ts("20240301101502.1234-0530", expect!["2024-03-01 10:15:02.123400000 offset=Some(-330) precision=Fraction(4) display=20240301101502.1234-0530"]);
    check_ts("20240301101502.5", expect!["2024-03-01 10:15:02.500000000 offset=None precision=Fraction(1) display=20240301101502.5"]);
    check_ts(
        "19450312",
        expect!["1945-03-12 00:00:00.000000000 offset=None precision=Day display=19450312"],
    );
    check_ts(
        "202403",
        expect!["2024-03-01 00:00:00.000000000 offset=None precision=Month display=202403"],
    );
    check_ts(
        "2024030110+0000",
        expect![
            "2024-03-01 10:00:00.000000000 offset=Some(0) precision=Hour display=2024030110+0000"
        ],
    );
    check_ts("20241301", expect!["error: month 13 out of range 1..=12"]);
    check_ts("20240230", expect!["error: day 30 out of range 1..=29"]);
    check_ts(
        "2024-03-01T10:15",
        expect![[r#"error: malformed timestamp "2024-03-01T10:15": expected digits"#]],
    );
}

fn required_pid3() -> AckError {
    AckError {
        code: ErrorCode::RequiredFieldMissing,
        location: Some(ErrorLocation {
            segment: "PID".into(),
            sequence: 1,
            field: Some(3),
            repetition: Some(1),
            component: Some(1),
        }),
        message: "NHS number missing | PID-3 has no ^^^NHS repetition".into(),
    }
}

#[test]
fn ack_aa() {
    check_ack(
        &fixture("a01_v2.4.hl7"),
        AckCode::Aa,
        None,
        expect![[r#"
        MSH|^~\&|HANDOVER|HANDOVER|PAS|RX1|20240301101503||ACK^A01^ACK|ACK-0001|P|2.4
        MSA|AA|RX1-MSG-000101
    "#]],
    );
}

#[test]
fn ack_ae_v251() {
    check_ack(
        &fixture("a02_v2.5.1.hl7"),
        AckCode::Ae,
        Some(&required_pid3()),
        expect![[r#"
        MSH|^~\&|HANDOVER|HANDOVER|PAS|RX1|20240301101503||ACK^A02^ACK|ACK-0001|P|2.5.1
        MSA|AE|RX1-MSG-000205
        ERR||PID^1^3^1^1|101^Required field missing^HL70357|E||||NHS number missing \F\ PID-3 has no \S\\S\\S\NHS repetition
    "#]],
    );
}

#[test]
fn ack_ae_v24() {
    check_ack(
        &fixture("a01_v2.4.hl7"),
        AckCode::Ae,
        Some(&required_pid3()),
        expect![[r#"
        MSH|^~\&|HANDOVER|HANDOVER|PAS|RX1|20240301101503||ACK^A01^ACK|ACK-0001|P|2.4
        MSA|AE|RX1-MSG-000101|NHS number missing \F\ PID-3 has no \S\\S\\S\NHS repetition
        ERR|PID^1^3^101&Required field missing&HL70357|PID^1^3^1^1|101^Required field missing^HL70357|E||||NHS number missing \F\ PID-3 has no \S\\S\\S\NHS repetition
    "#]],
    );
}

#[test]
fn ack_ae_v23_custom_separators() {
    check_ack(
        &fixture("a01_v2.3_custom_separators.hl7"),
        AckCode::Ae,
        Some(&required_pid3()),
        expect![[r#"
            MSH#$%!&#HANDOVER#HANDOVER#LEGACYPAS#RR8#20240301101503##ACK$A01$ACK#ACK-0001#P#2.3
            MSA#AE#RR8-0000777#NHS number missing | PID-3 has no ^^^NHS repetition
            ERR#PID$1$3$101&Required field missing&HL70357#PID$1$3$1$1#101$Required field missing$HL70357#E####NHS number missing | PID-3 has no ^^^NHS repetition
        "#]],
    );
}

#[test]
fn ack_ar_unsupported_type() {
    let error = AckError {
        code: ErrorCode::UnsupportedMessageType,
        location: Some(ErrorLocation::field("MSH", 9)),
        message: "trigger A28 is not handled".into(),
    };
    check_ack(
        &fixture("a28_v2.4.hl7"),
        AckCode::Ar,
        Some(&error),
        expect![[r#"
        MSH|^~\&|HANDOVER|HANDOVER|PAS|RX1|20240301101503||ACK^A28^ACK|ACK-0001|P|2.4
        MSA|AR|RX1-MSG-000600|trigger A28 is not handled
        ERR|MSH^1^9^200&Unsupported message type&HL70357|MSH^1^9|200^Unsupported message type^HL70357|E||||trigger A28 is not handled
    "#]],
    );
}

#[test]
fn ack_ar_v251_no_location() {
    let error = AckError {
        code: ErrorCode::ApplicationInternalError,
        location: None,
        message: "store unavailable\nretry later".into(),
    };
    check_ack(
        &fixture("a02_v2.5.1.hl7"),
        AckCode::Ar,
        Some(&error),
        expect![[r#"
        MSH|^~\&|HANDOVER|HANDOVER|PAS|RX1|20240301101503||ACK^A02^ACK|ACK-0001|P|2.5.1
        MSA|AR|RX1-MSG-000205
        ERR|||207^Application internal error^HL70357|E||||store unavailable\.br\retry later
    "#]],
    );
}

#[test]
fn ack_unparseable_message() {
    let out = ack_unparseable(
        AckCode::Ar,
        "invalid encoding characters \"^~\" in MSH-2",
        "20240301101503",
        "ACK-0002",
        b"MSH|^~|||",
    );
    let parsed = Message::parse(out.as_bytes()).unwrap();
    assert_eq!(parsed.get("MSA-1"), Some("AR"));
    assert_eq!(parsed.get("MSA-2"), None);
    expect![[r#"
        MSH|^~\&|||||20240301101503||ACK|ACK-0002|P|2.4
        MSA|AR||invalid encoding characters "\S\\R\" in MSH-2
        ERR|^^^102&Data type error&HL70357||102^Data type error^HL70357|E||||invalid encoding characters "\S\\R\" in MSH-2
    "#]].assert_eq(&out.replace('\r', "\n"));
}

#[test]
fn ack_unparseable_echoes_a_readable_control_id() {
    let original = b"\x0bMSH|^~\\&|PAS|RX1|HO|LA|20261120||ADT^A01|MSG-77^x|P|2.4\rfree text|x\r";
    assert!(Message::parse(original).is_err());
    assert_eq!(salvage_control_id(original).as_deref(), Some("MSG-77"));
    let out = ack_unparseable(AckCode::Ar, "bad", "20240301101503", "ACK-0003", original);
    let parsed = Message::parse(out.as_bytes()).unwrap();
    assert_eq!(parsed.get("MSA-2"), Some("MSG-77"));
    // The original's sender is the ACK's receiver and the other way round, as in any ACK.
    assert_eq!(parsed.get("MSH-3"), Some("HO"));
    assert_eq!(parsed.get("MSH-4"), Some("LA"));
    assert_eq!(parsed.get("MSH-5"), Some("PAS"));
    assert_eq!(parsed.get("MSH-6"), Some("RX1"));
    assert_eq!(parsed.get("MSH-12"), Some("2.4"));
    // Other delimiters, a facility with components, v2.5.1: re-delimited and echoed.
    let original = b"MSH#$~\\&#PAS#RX1$1.2.3$ISO#HO#LA#20261120##ADT$A01#M-9#P#2.5.1\rPV1#|\r";
    let out = ack_unparseable(AckCode::Ar, "bad", "20240301101503", "ACK-0004", original);
    expect![[r#"MSH|^~\&|HO|LA|PAS|RX1^1.2.3^ISO|20240301101503||ACK^A01^ACK|ACK-0004|P|2.5.1"#]]
        .assert_eq(out.split('\r').next().unwrap());
    // A version that is not one is not echoed.
    let original = b"MSH|^~\\&|PAS|RX1|HO|LA|20261120||ADT^A01|M-10|P|v2|\rbad\x00";
    let out = ack_unparseable(AckCode::Ar, "bad", "20240301101503", "ACK-0005", original);
    assert!(
        out.starts_with("MSH|^~\\&|HO|LA|PAS|RX1|20240301101503||ACK^A01^ACK|ACK-0005|P|2.4\r"),
        "{out}"
    );
    for unreadable in [
        &b""[..],
        b"PID|1",
        b"MSH|^~\\&|a|b|c|d|e|f|g",
        b"MSH|^~\\&|||||||ADT|\x01|",
    ] {
        assert_eq!(salvage_control_id(unreadable), None, "{unreadable:?}");
    }
}

#[test]
fn fixture_crlf_escapes_dump() {
    let msg = Message::parse(&fixture("a01_crlf_escapes.hl7")).unwrap();
    expect![[r#"
        MSH
          MSH-1 = "|"
          MSH-2 = "^~\\&"
          MSH-3 = "PAS"
          MSH-4 = "RX1"
          MSH-5 = "HANDOVER"
          MSH-6 = "HANDOVER"
          MSH-7 = "20240307220015"
          MSH-9.1 = "ADT"
          MSH-9.2 = "A01"
          MSH-9.3 = "ADT_A01"
          MSH-10 = "RX1-MSG-000512"
          MSH-11 = "P"
          MSH-12 = "2.4"
          MSH-15 = "AL"
          MSH-16 = "NE"
          MSH-18 = "UNICODE UTF-8"
        EVN
          EVN-1 = "A01"
          EVN-2 = "20240307220000"
        PID
          PID-1 = "1"
          PID-3[1].1 = "9990000026"
          PID-3[1].4 = "NHS"
          PID-3[1].5 = "NH"
          PID-3[2].1 = "RX1-100300"
          PID-3[2].4 = "RX1"
          PID-3[2].5 = "MR"
          PID-5.1 = "DUBOIS"
          PID-5.2 = "RENÉE"
          PID-5.5 = "MS"
          PID-7 = "19600229"
          PID-8 = "F"
          PID-11.1 = "FLAT 3&4 ST JOHN'S COURT"
          PID-11.2 = "THE OLD RECTORY\nCHURCH LANE"
          PID-11.3 = "YORK"
          PID-11.5 = "YO1 7HH"
          PID-11.6 = "GBR"
          PID-11.7 = "H"
          PID-32 = "01"
        NK1
          NK1-1 = "1"
          NK1-2 = "HOLMES & CO SOLICITORS"
          NK1-3.1 = "O"
          NK1-3.2 = "Other"
          NK1-3.3 = "HL70063"
          NK1-5 = "01904496000"
        PV1
          PV1-1 = "1"
          PV1-2 = "I"
          PV1-3.1 = "WARD7"
          PV1-3.4 = "RX1CC"
          PV1-4 = "EM"
          PV1-7.1 = "C3456789"
          PV1-7.2 = "PATEL"
          PV1-7.3 = "ANITA"
          PV1-7.6 = "DR"
          PV1-7.9 = "NATGP"
          PV1-10 = "300"
          PV1-19 = "RX1-ENC-0107"
          PV1-44 = "20240307214500"
        ZU1
          ZU1-1 = "1"
          ZU1-2 = "SIDE ROOM REQUIRED|INFECTION CONTROL"
          ZU1-3 = "Y"
          ZU1-4 = "RX1\\ICT"
    "#]]
    .assert_eq(&dump(&msg));
}

#[test]
fn ack_without_processing_id_and_version_in_the_original() {
    let error = AckError {
        code: ErrorCode::RequiredFieldMissing,
        location: Some(ErrorLocation::field("MSH", 12)),
        message: "MSH-12 version id is required".into(),
    };
    check_ack(
        b"MSH|^~\\&|PAS|RX1|HANDOVER|RX1|20261120091500||ADT^A01|V1||\rPID|1\r",
        AckCode::Ar,
        Some(&error),
        expect![[r#"
            MSH|^~\&|HANDOVER|RX1|PAS|RX1|20240301101503||ACK^A01^ACK|ACK-0001|P|2.4
            MSA|AR|V1|MSH-12 version id is required
            ERR|MSH^1^12^101&Required field missing&HL70357|MSH^1^12|101^Required field missing^HL70357|E||||MSH-12 version id is required
        "#]],
    );
}

#[test]
fn ack_salvaged_from_the_first_message_of_a_batch() {
    let error = AckError {
        code: ErrorCode::SegmentSequenceError,
        location: Some(ErrorLocation {
            segment: "FHS".into(),
            sequence: 1,
            field: None,
            repetition: None,
            component: None,
        }),
        message: "batches are not supported\x0B over MLLP".into(),
    };
    let out = ack_salvaged(
        AckCode::Ar,
        &error,
        "20240301101503",
        "ACK-0006",
        b"MSH|^~\\&|PAS|RX1\x0B|HO|LA|20261120||ADT^A01|B01|T|2.5\rEVN|A01\r",
    );
    assert!(!out.contains(|c: char| c < ' ' && c != '\r'), "{out:?}");
    expect![[r#"
        MSH|^~\&|HO|LA|PAS|RX1|20240301101503||ACK^A01^ACK|ACK-0006|T|2.5
        MSA|AR|B01|batches are not supported over MLLP
        ERR|FHS^1^^100&Segment sequence error&HL70357|FHS^1|100^Segment sequence error^HL70357|E||||batches are not supported over MLLP
    "#]].assert_eq(&out.replace('\r', "\n"));
}
