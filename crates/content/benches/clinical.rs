//! What opening clinical content costs (not a test): parsing and rendering a 5 MB
//! C-CDA, and reading a 20 MB XDM package (checking every document's SHA-1), each run
//! `BENCH_RUNS` times (default 20). Prints min, p50 and max in milliseconds.
//!
//! `cargo bench -p directmail-content --bench clinical`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use directmail_content::cda::{CdaLimits, RenderOptions, parse_cda, render_document};
use directmail_content::xdm::{
    Confidentiality, DocumentInput, Sender, XdmInput, XdmLimits, read_xdm, write_xdm,
};

const REFERRAL: &str = include_str!("../tests/fixtures/cda/referral-note.xml");

/// The referral note with a Results section of `rows` table rows added.
fn big_cda(target_bytes: usize) -> Vec<u8> {
    let row = |i: usize| {
        format!(
            "<tr><td>2024-03-{:02}</td><td>Potassium</td><td>{}.{} mmol/L</td><td><content styleCode=\"Bold\">normal</content></td></tr>\n",
            i % 28 + 1,
            3 + i % 3,
            i % 10
        )
    };
    let mut rows = String::new();
    let mut i = 0;
    while rows.len() < target_bytes.saturating_sub(REFERRAL.len()) {
        rows.push_str(&row(i));
        i += 1;
    }
    let section = format!(
        "<component><section><code code=\"30954-2\" codeSystem=\"2.16.840.1.113883.6.1\"/><title>Results</title><text><table><thead><tr><th>Date</th><th>Test</th><th>Value</th><th>Flag</th></tr></thead><tbody>{rows}</tbody></table></text></section></component>"
    );
    let at = REFERRAL
        .rfind("</structuredBody>")
        .expect("a structured body");
    let mut doc = REFERRAL[..at].to_owned();
    doc.push_str(&section);
    doc.push_str(&REFERRAL[at..]);
    doc.into_bytes()
}

/// Bytes that do not compress (a scanned document stands in for them).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn time(name: &str, runs: usize, mut f: impl FnMut() -> usize) {
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "{name:<44} min {:>7.1} ms   p50 {:>7.1} ms   max {:>7.1} ms   ({runs} runs)",
        ms[0],
        ms[ms.len() / 2],
        ms[ms.len() - 1]
    );
}

fn main() {
    let runs = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let cda = big_cda(5 * 1024 * 1024);
    let limits = CdaLimits::default();
    time(
        &format!("C-CDA {:.1} MB: parse", cda.len() as f64 / 1048576.0),
        runs,
        || parse_cda(&cda, &limits).expect("parses").sections().len(),
    );
    time(
        &format!(
            "C-CDA {:.1} MB: parse and render",
            cda.len() as f64 / 1048576.0
        ),
        runs,
        || {
            let doc = parse_cda(&cda, &limits).expect("parses");
            render_document(&doc, &RenderOptions::new("/leave?to=")).len()
        },
    );

    let scans: Vec<Vec<u8>> = (0..4).map(|i| noise(5 * 1024 * 1024 + i)).collect();
    let mut documents = vec![DocumentInput {
        title: "Referral note".into(),
        mime_type: "text/xml".into(),
        bytes: &cda,
        confidentiality: Confidentiality::Normal,
        creation_time: None,
        type_code: None,
        class_code: None,
    }];
    documents.extend(scans.iter().map(|s| DocumentInput {
        title: "Scan".into(),
        mime_type: "application/pdf".into(),
        bytes: s,
        confidentiality: Confidentiality::Normal,
        creation_time: None,
        type_code: None,
        class_code: None,
    }));
    let package = write_xdm(&XdmInput {
        now: 1_733_400_000,
        seed: [7; 16],
        sender: Sender {
            person: Some("Dr Samuel Okafor".into()),
            institution: Some("Riverside Family Medicine".into()),
            address: "dr.okafor@direct.riverside.test".into(),
        },
        recipients: vec!["referrals@direct.lakeside.test".into()],
        source_id: None,
        patient: None,
        content_type: None,
        documents,
    })
    .expect("a package");
    let xdm_limits = XdmLimits::default();
    time(
        &format!(
            "XDM {:.1} MB: read and check",
            package.len() as f64 / 1048576.0
        ),
        runs,
        || {
            let p = read_xdm(&package, &xdm_limits).expect("reads");
            assert!(p.problems.is_empty());
            p.documents().count()
        },
    );
}
