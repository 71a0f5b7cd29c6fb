//! Clinical documents as a user would see them: fixtures under `tests/fixtures/cda/`
//! (written for these tests; see the README there) and documents generated here.

use std::time::{Duration, Instant};

use directmail_content::cda::{
    Body, CdaError, CdaLimits, Determination, Document, EICR_DOCUMENT_CODE, MAX_SECTION_NESTING,
    NonXmlContent, RenderOptions, Viewer, default_section_order, parse_cda, priority_words,
    render_document, render_narrative, saved_section_order,
};
use html5ever::tendril::TendrilSink;
use html5ever::{ParseOpts, QualName, local_name, ns, parse_fragment};
use markup5ever_rcdom::{NodeData, RcDom};

const LEAVE: &str = "/leave?to=";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/cda/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

#[track_caller]
fn parse(bytes: &[u8]) -> Document {
    parse_cda(bytes, &CdaLimits::default()).unwrap_or_else(|error| panic!("{error}"))
}

fn render(doc: &Document) -> String {
    render_document(doc, &RenderOptions::new(LEAVE))
}

fn titles(html: &str) -> Vec<String> {
    html.split("<span class=\"cda-section-title\">")
        .skip(1)
        .filter_map(|rest| rest.split_once("</span>"))
        .map(|(title, _)| title.to_owned())
        .collect()
}

/// Checks rendered HTML the way a browser would read it: parsed by html5ever (the
/// parser ammonia uses), no element that runs or loads anything, no event-handler or
/// style attribute, links only to the leaving page or within the page, images only
/// inline rasters. Also checks the text for anything that points elsewhere.
#[track_caller]
fn assert_safe(html: &str) {
    let lower = html.to_ascii_lowercase();
    for needle in [
        "<script",
        "javascript:",
        "vbscript:",
        "tracker.example",
        "attacker.example",
        "<iframe",
        "<object",
        "<style",
    ] {
        assert!(!lower.contains(needle), "{needle} in {html}");
    }
    let context = QualName::new(None, ns!(html), local_name!("div"));
    let dom = parse_fragment(
        RcDom::default(),
        ParseOpts::default(),
        context,
        vec![],
        false,
    )
    .one(html);
    let mut stack = vec![dom.document.clone()];
    let mut elements = 0;
    while let Some(node) = stack.pop() {
        if let NodeData::Element { name, attrs, .. } = &node.data {
            elements += 1;
            let element = name.local.to_string();
            assert!(
                ![
                    "script", "style", "iframe", "object", "embed", "link", "meta", "base", "form"
                ]
                .contains(&element.as_str()),
                "<{element}> in {html}"
            );
            for attribute in attrs.borrow().iter() {
                let attribute_name = attribute.name.local.to_string();
                let value = attribute.value.to_string();
                assert!(
                    !attribute_name.starts_with("on")
                        && attribute_name != "style"
                        && attribute_name != "srcdoc",
                    "{attribute_name}={value:?} on <{element}>"
                );
                match attribute_name.as_str() {
                    "href" => assert!(
                        value.starts_with(&format!("{LEAVE}http")) || value.starts_with("#cda-"),
                        "href={value:?}"
                    ),
                    "src" => assert!(
                        [
                            "data:image/png;base64,",
                            "data:image/jpeg;base64,",
                            "data:image/gif;base64,"
                        ]
                        .iter()
                        .any(|prefix| value.starts_with(prefix)),
                        "src={value:?}"
                    ),
                    "id" => assert!(value.starts_with("cda-"), "id={value:?}"),
                    _ => {}
                }
            }
        }
        stack.extend(node.children.borrow().iter().cloned());
    }
    assert!(elements > 0);
}

#[test]
fn a_referral_note_shows_the_patient_author_and_encounter_in_the_header() {
    let doc = parse(&fixture("referral-note.xml"));
    let patient = doc.patient.as_ref().unwrap();
    assert_eq!(
        patient.name.as_ref().unwrap().display(),
        "Maria Elena Lopez"
    );
    assert_eq!(patient.birth_time.as_ref().unwrap().raw, "19580304");
    assert_eq!(patient.sex().as_deref(), Some("Female"));
    assert_eq!(doc.display_title(), "Referral to Cardiology");
    assert_eq!(doc.document_type.as_ref().unwrap().code, "57133-1");
    assert_eq!(doc.language.as_deref(), Some("en-US"));
    assert!(!doc.is_reportability_response());

    let html = render(&doc);
    for shown in [
        "<h2 class=\"cda-title\">Referral to Cardiology</h2>",
        "<dt>Patient</dt><dd>Maria Elena Lopez</dd>",
        "<dt>Patient ID</dt><dd>998991 (2.16.840.1.113883.19.5.99999.2); 444-22-2222 (2.16.840.1.113883.4.1)</dd>",
        "<dt>Birth date</dt><dd>March 4, 1958</dd>",
        "<dt>Sex</dt><dd>Female</dd>",
        "<dt>Address</dt><dd>1357 Amber Lane, Apt 4, Springfield, IL 62704, US</dd>",
        "<dt>Author</dt><dd>Dr. Samuel Okafor MD, Riverside Family Medicine</dd>",
        "<dt>Custodian</dt><dd>Riverside Family Medicine</dd>",
        "<dt>Encounter</dt><dd>Office visit, March 12, 2024, 14:00 (UTC-05:00) to March 12, 2024, 14:30 (UTC-05:00), Riverside Family Medicine, Main Street Clinic</dd>",
        "<dt>Responsible clinician</dt><dd>Dr. Samuel Okafor, Riverside Family Medicine</dd>",
        "<dt>Document type</dt><dd>Referral note (57133-1)</dd>",
        "<dt>Date</dt><dd>March 12, 2024, 14:30 (UTC-05:00)</dd>",
        "<dt>Confidentiality</dt><dd>Normal</dd>",
    ] {
        assert!(html.contains(shown), "{shown} not in {html}");
    }
    assert!(html.starts_with("<article class=\"cda-document\" lang=\"en-US\">"));
    assert_safe(&html);
}

#[test]
fn sections_come_in_the_preferred_order_then_document_order() {
    let doc = parse(&fixture("referral-note.xml"));
    let in_document: Vec<&str> = doc.sections().iter().map(|s| s.display_title()).collect();
    assert_eq!(
        in_document,
        [
            "Social History",
            "Results",
            "Allergies",
            "Problems",
            "Reason for Referral",
            "Medications",
            "Mental Status",
            "Plan of Treatment"
        ]
    );
    let ordered: Vec<&str> = default_section_order(doc.sections())
        .iter()
        .map(|s| s.display_title())
        .collect();
    let expected = [
        "Reason for Referral",
        "Problems",
        "Medications",
        "Allergies",
        "Results",
        "Social History",
        "Mental Status",
        "Plan of Treatment",
    ];
    assert_eq!(ordered, expected);
    // The page shows them in that order, the nested section inside its parent.
    let mut shown = expected.to_vec();
    shown.push("Patient Instructions");
    assert_eq!(titles(&render(&doc)), shown);
}

#[test]
fn a_saved_order_puts_the_users_sections_first() {
    let doc = parse(&fixture("referral-note.xml"));
    let saved = vec!["30954-2".to_owned(), "29762-2".to_owned(), "1-1".to_owned()];
    let ordered: Vec<&str> = saved_section_order(doc.sections(), &saved)
        .iter()
        .map(|s| s.display_title())
        .collect();
    assert_eq!(
        ordered[..4],
        [
            "Results",
            "Social History",
            "Reason for Referral",
            "Problems"
        ]
    );
    let html = render_document(
        &doc,
        &RenderOptions {
            section_order: &saved,
            ..RenderOptions::new(LEAVE)
        },
    );
    assert_eq!(
        titles(&html)[..3],
        ["Results", "Social History", "Reason for Referral"]
    );
}

#[test]
fn collapsed_sections_render_closed_and_links_can_open_in_a_new_window() {
    let doc = parse(&fixture("referral-note.xml"));
    let collapsed = vec!["11450-4".to_owned(), "10160-0".to_owned()];
    let html = render_document(
        &doc,
        &RenderOptions {
            collapsed: &collapsed,
            new_window: true,
            ..RenderOptions::new(LEAVE)
        },
    );
    assert!(
        html.contains("data-loinc=\"11450-4\"><details><summary>"),
        "{html}"
    );
    assert!(
        html.contains("data-loinc=\"10160-0\"><details><summary>"),
        "{html}"
    );
    assert!(
        html.contains("data-loinc=\"42349-1\"><details open><summary>"),
        "{html}"
    );
    assert!(
        html.contains(
            "rel=\"noopener noreferrer\" target=\"_blank\" title=\"https://www.example.org/"
        ),
        "{html}"
    );
    assert!(!render(&doc).contains("target="), "same window by default");
}

#[test]
fn the_referral_note_renders_tables_lists_links_footnotes_and_its_embedded_image() {
    let doc = parse(&fixture("referral-note.xml"));
    assert!(doc.stats().is_clean(), "{:?}", doc.stats());
    let html = render(&doc);
    for shown in [
        // Sections are collapsible and carry their LOINC code for the page's script.
        "<section class=\"cda-section\" data-loinc=\"42349-1\"><details open><summary><span class=\"cda-section-title\">Reason for Referral</span></summary>",
        // Tables keep headers, captions, spans and style codes as our classes.
        "<caption>Lipid panel, March 5, 2024</caption>",
        "<th scope=\"col\">Test</th>",
        "<td class=\"cda-botrule\" colspan=\"3\">Troponin I: <span class=\"cda-italics\">pending</span></td>",
        "<td>&lt; 100 mg/dL</td>",
        "<tr data-cda-id=\"soc1\"><td>Tobacco smoking status</td>",
        // Lists: ordered with a caption, unordered.
        "<ol class=\"cda-list\"><span class=\"cda-caption\">Active problems</span><li><span data-cda-id=\"prob1\">Essential hypertension</span> since 2015</li>",
        "<ul class=\"cda-list\"><li>Exercise stress test, to be scheduled by cardiology</li>",
        // Line breaks inside cells.
        "1 tablet by mouth at bedtime<br>Take with water",
        // A web link goes through the leaving page.
        "<a class=\"cda-link\" href=\"/leave?to=https%3A%2F%2Fwww.example.org%2Fguidelines%2Fchest-pain%3Fref%3Dcda%26v%3D2\" rel=\"noopener noreferrer\" title=\"https://www.example.org/guidelines/chest-pain?ref=cda&amp;v=2\">2021 chest pain guideline</a>",
        // Footnote reference and footnote.
        "168 mg/dL<sup class=\"cda-footnote-ref\"><a href=\"#cda-s2-fn-1\">1</a></sup>",
        "id=\"cda-s2-fn-1\"><sup class=\"cda-footnote-number\">1</sup> Drawn after a 12-hour fast.</span>",
        // The embedded image, inline, with its caption.
        "<span class=\"cda-media\"><img class=\"cda-image\" alt=\"Image from the document\" src=\"data:image/png;base64,iVBORw0KGgo",
        "<span class=\"cda-caption\">Lead II rhythm strip</span></span>",
    ] {
        assert!(html.contains(shown), "{shown} not in {html}");
    }
    assert!(!html.contains("cda-left-out"), "nothing was left out");
    assert_safe(&html);
}

#[test]
fn a_restricted_section_and_nested_sections_are_marked() {
    let doc = parse(&fixture("referral-note.xml"));
    let html = render(&doc);
    assert!(html.contains(
        "<section class=\"cda-section\" data-loinc=\"10190-7\" data-confidentiality=\"R\"><details open><summary>\
         <span class=\"cda-section-title\">Mental Status</span> <span class=\"cda-confidentiality\">Restricted</span></summary>"
    ), "{html}");
    let plan = doc.sections().last().unwrap();
    assert_eq!(plan.sections.len(), 1);
    assert_eq!(plan.sections[0].loinc(), Some("69730-0"));
    // The nested section closes before its parent does.
    let nested = html.find("data-loinc=\"69730-0\"").unwrap();
    let parent = html.find("data-loinc=\"18776-5\"").unwrap();
    assert!(parent < nested);
    assert!(html[nested..].starts_with(
        "data-loinc=\"69730-0\"><details open><summary><span class=\"cda-section-title\">Patient Instructions</span></summary>\
         <div class=\"cda-narrative\"><div class=\"cda-paragraph\">Call 911 if chest pain lasts more than 5 minutes.</div></div>\
         </details></section></details></section></article>"
    ), "{}", &html[nested..]);
}

#[test]
fn narratives_can_be_rendered_one_section_at_a_time() {
    let doc = parse(&fixture("referral-note.xml"));
    let allergies = &doc.sections()[2];
    let (html, stats) = render_narrative(&allergies.narrative, &RenderOptions::new(LEAVE));
    assert!(stats.is_clean());
    assert!(
        html.trim_start()
            .starts_with("<table class=\"cda-table\"><thead><tr><th>Substance</th>"),
        "{html}"
    );
    assert!(html.contains("<td data-cda-id=\"allergy1\">Penicillin G benzathine</td>"));
    assert_eq!(
        allergies.narrative.plain_text(),
        "Substance\tReaction\tSeverity\tStatus\n\
         Penicillin G benzathine\tHives\tModerate\tActive\n\
         Latex\tContact dermatitis\tMild\tActive"
    );
}

#[test]
fn hostile_markup_is_dropped_counted_and_never_executable() {
    let doc = parse(&fixture("hostile.xml"));
    let stats = doc.stats();
    // script, img, xhtml:iframe, xhtml:script, style, object.
    assert_eq!(stats.dropped_elements, 6, "{stats:?}");
    // onclick, style, table onmouseover, td onmouseover, class, xsi:type.
    assert_eq!(stats.dropped_attributes, 6, "{stats:?}");
    // javascript: twice, vbscript:, data:, #ref-1, java<TAB>script:.
    assert_eq!(stats.unlinked, 6, "{stats:?}");
    // The chart referring to an image on another server.
    assert_eq!(stats.images_not_shown, 1, "{stats:?}");

    let html = render(&doc);
    assert_safe(&html);
    // What a reader still sees: the text, the table, the link texts as plain text.
    for shown in [
        "<div class=\"cda-paragraph\">Patient seen for follow-up.</div>",
        "<table class=\"cda-table\"><tbody><tr><td>Blood pressure</td><td>128/82</td></tr></tbody></table>",
        "click me",
        "mixed case",
        "<span class=\"cda-bold\">Bold text</span>",
        // The CDATA "script" is text, escaped.
        "<span>&lt;script&gt;alert(&#39;cdata&#39;)&lt;/script&gt;</span>",
        "<span class=\"cda-image-withheld\">",
        "<span class=\"cda-caption\">Remote chart</span>",
        "<p class=\"cda-left-out\" role=\"note\">Parts of this document were left out or shown as plain text for safety: \
         6 elements that clinical documents may not contain (such as scripts or web page parts); \
         6 attributes (such as script hooks or styles); 6 links that were not web addresses, shown as text; \
         1 image that is not a picture embedded in the document.</p>",
    ] {
        assert!(html.contains(shown), "{shown} not in {html}");
    }
    // The sections (the header shows the patient ID's markup as escaped text).
    let sections = &html[html.find("<section").unwrap()..];
    for hidden in [
        "alert('script')",
        "alert(&#39;script&#39;)",
        "frame fallback",
        "object fallback",
        "xhtml",
        "onmouseover",
        "onclick",
        "evil",
        "<a ",
        "<img",
    ] {
        assert!(!sections.contains(hidden), "{hidden} in {sections}");
    }
}

#[test]
fn hostile_header_values_are_escaped_and_unsafe_attribute_values_left_out() {
    let doc = parse(&fixture("hostile.xml"));
    let html = render(&doc);
    assert_safe(&html);
    assert!(
        html.starts_with("<article class=\"cda-document\"><header"),
        "bad language left out: {html}"
    );
    assert!(html.contains(
        "<h2 class=\"cda-title\">&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt; Consult</h2>"
    ));
    assert!(html.contains(
        "<dt>Patient</dt><dd>Eve &lt;img src=x onerror=alert(&#39;name&#39;)&gt;Mallory</dd>"
    ));
    assert!(html.contains("<dt>Patient ID</dt><dd>&lt;b onmouseover=alert(1)&gt;7 ("));
    assert!(html.contains(
        "Consult note&quot;&gt;&lt;script&gt;alert(&#39;code&#39;)&lt;/script&gt; (11488-4)"
    ));
    // A section code that is not a plain code gets no data-loinc attribute.
    assert!(
        html.contains("<section class=\"cda-section\"><details open>"),
        "{html}"
    );
}

#[test]
fn an_html_non_xml_body_is_returned_as_data_and_never_rendered() {
    let doc = parse(&fixture("hostile-nonxml-html.xml"));
    let Body::NonXml(body) = &doc.body else {
        panic!("{:?}", doc.body)
    };
    assert_eq!(body.media_type, "text/html");
    let NonXmlContent::Data(bytes) = &body.content else {
        panic!("{:?}", body.content)
    };
    assert!(
        bytes
            .starts_with(b"<html><body><script>alert('nonxml')</script><h1>Discharge summary</h1>")
    );
    assert_eq!(body.viewer(), Viewer::Download);
    assert!(doc.sections().is_empty());

    let html = render(&doc);
    assert_safe(&html);
    assert!(html.contains(
        "<p class=\"cda-nonxml\" data-media-type=\"text/html\">The content of this document is a file \
         (text/html, 127 bytes). It is not shown as part of this page.</p>"
    ), "{html}");
    assert!(html.contains("<dt>Patient</dt><dd>Walter Ng</dd>"));
    for hidden in ["<h1", "Discharge summary", "nonxml')", "PGh0bWw"] {
        assert!(!html.contains(hidden), "{hidden} in {html}");
    }
}

/// A minimal document around the given section narrative.
fn document_with_text(text: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<ClinicalDocument xmlns=\"urn:hl7-org:v3\">\
         <code code=\"34133-9\" codeSystem=\"2.16.840.1.113883.6.1\" displayName=\"Summary\"/>\
         <recordTarget><patientRole><patient><name><given>Ana</given><family>Silva</family></name></patient></patientRole></recordTarget>\
         <component><structuredBody><component><section>\
         <code code=\"30954-2\" codeSystem=\"2.16.840.1.113883.6.1\"/><title>Results</title>\
         <text>{text}</text></section></component></structuredBody></component></ClinicalDocument>"
    )
}

#[test]
fn ten_thousand_table_rows_render_in_full() {
    let mut rows = String::new();
    for row in 0..10_000 {
        rows.push_str(&format!(
            "<tr><td>Glucose {row}</td><td styleCode=\"Bold\">{}</td><td>mg/dL</td></tr>\n",
            70 + row % 50
        ));
    }
    let xml = document_with_text(&format!(
        "<table><thead><tr><th>Test</th><th>Value</th><th>Unit</th></tr></thead><tbody>{rows}</tbody></table>"
    ));
    let started = Instant::now();
    let doc = parse(xml.as_bytes());
    let html = render(&doc);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(html.matches("<tr>").count(), 10_001);
    assert_eq!(html.matches("</tr>").count(), 10_001);
    assert_eq!(html.matches("<td class=\"cda-bold\">").count(), 10_000);
    assert!(
        html.contains("<tr><td>Glucose 0</td><td class=\"cda-bold\">70</td><td>mg/dL</td></tr>")
    );
    assert!(html.contains("<tr><td>Glucose 9999</td><td class=\"cda-bold\">119</td><td>mg/dL</td></tr></tbody></table>"));
    assert!(doc.stats().is_clean());
    assert_safe(&html);
}

/// Runs `test` on a thread with a small stack: parsing must not recurse with the input.
fn on_a_small_stack(test: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(test)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn ten_thousand_nested_elements_are_refused_without_overflowing_the_stack() {
    on_a_small_stack(|| {
        let nested = format!(
            "{}deep{}",
            "<content>".repeat(10_000),
            "</content>".repeat(10_000)
        );
        let error = parse_cda(
            document_with_text(&nested).as_bytes(),
            &CdaLimits::default(),
        )
        .unwrap_err();
        assert_eq!(error, CdaError::TooDeep { limit: 256 });
        assert_eq!(
            error.to_string(),
            "This document is nested more deeply than a clinical document should be (over 256 \
             levels); it was not opened."
        );

        let sections = format!(
            "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><component><structuredBody>{}{}</structuredBody></component></ClinicalDocument>",
            "<component><section><title>s</title>".repeat(10_000),
            "</section></component>".repeat(10_000)
        );
        assert_eq!(
            parse_cda(sections.as_bytes(), &CdaLimits::default()).unwrap_err(),
            CdaError::TooDeep { limit: 256 }
        );
    });
}

#[test]
fn nesting_within_the_limit_renders_balanced_on_a_small_stack() {
    on_a_small_stack(|| {
        // ClinicalDocument, component, structuredBody, component, section, text: 6 levels.
        let nested = format!(
            "{}deep{}",
            "<content>".repeat(250),
            "</content>".repeat(250)
        );
        let doc = parse(document_with_text(&nested).as_bytes());
        let html = render(&doc);
        assert_eq!(html.matches("<span>").count(), 250);
        assert!(html.contains(&format!(
            "{}deep{}",
            "<span>".repeat(250),
            "</span>".repeat(250)
        )));

        // Sections nested 120 deep (two XML levels each): the first 16 levels render
        // inside one another, the 104 below are listed flat inside the 16th.
        let sections = format!(
            "<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><component><structuredBody>{}{}</structuredBody></component></ClinicalDocument>",
            "<component><section><title>s</title>".repeat(120),
            "</section></component>".repeat(120)
        );
        let doc = parse(sections.as_bytes());
        let html = render(&doc);
        assert_eq!(html.matches("<details open>").count(), 120);
        let mut level = doc.sections();
        for _ in 1..MAX_SECTION_NESTING {
            assert_eq!(level.len(), 1);
            level = &level[0].sections;
        }
        assert_eq!(level[0].sections.len(), 104);
        assert!(level[0].sections.iter().all(|s| s.sections.is_empty()));
        assert!(html.ends_with(&format!("{}</article>", "</details></section>".repeat(17))));
    });
}

#[test]
fn a_dtd_is_refused_with_a_sentence_for_the_clinician() {
    let error = parse_cda(&fixture("dtd.xml"), &CdaLimits::default()).unwrap_err();
    assert_eq!(error, CdaError::Dtd);
    assert_eq!(
        error.to_string(),
        "This document declares a DTD, which is not allowed in a clinical document; it was not opened."
    );
}

#[test]
fn a_billion_laughs_document_is_refused_before_expansion() {
    let started = Instant::now();
    let error = parse_cda(&fixture("billion-laughs.xml"), &CdaLimits::default()).unwrap_err();
    assert_eq!(error, CdaError::Dtd);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Without the declaration, an entity reference is simply malformed XML.
    let undeclared = document_with_text("&lol9;");
    let error = parse_cda(undeclared.as_bytes(), &CdaLimits::default()).unwrap_err();
    assert!(
        matches!(error, CdaError::Malformed { line: 2 }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "This document is not well-formed XML (the first error is on line 2); it may be damaged, \
         and it was not opened."
    );
}

#[test]
fn iso_8859_1_documents_are_read() {
    let xml = document_with_text(
        "<paragraph>Temperatur 38,5 \u{b0}C \u{b7} \u{201c}Fi\u{e8}vre\u{201d}</paragraph>",
    )
    .replace(
        "<?xml version=\"1.0\"?>",
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>",
    )
    .replace(
        "<given>Ana</given><family>Silva</family>",
        "<given>José</given><family>Müller-Åström</family>",
    );
    // One byte per character; the curly quotes as windows-1252 writes them.
    let bytes: Vec<u8> = xml
        .chars()
        .map(|c| match c {
            '\u{201c}' => 0x93,
            '\u{201d}' => 0x94,
            c => u8::try_from(u32::from(c)).unwrap(),
        })
        .collect();
    assert!(std::str::from_utf8(&bytes).is_err(), "really not UTF-8");
    let doc = parse(&bytes);
    assert_eq!(
        doc.patient
            .as_ref()
            .unwrap()
            .name
            .as_ref()
            .unwrap()
            .display(),
        "José Müller-Åström"
    );
    let html = render(&doc);
    assert!(html.contains("<dt>Patient</dt><dd>José Müller-Åström</dd>"));
    assert!(html.contains("Temperatur 38,5 °C · “Fièvre”"), "{html}");
}

#[test]
fn utf16_documents_are_read_in_both_byte_orders() {
    let utf8 = fixture("referral-note.xml");
    let expected = parse(&utf8);
    let text =
        String::from_utf8(utf8)
            .unwrap()
            .replacen("encoding=\"UTF-8\"", "encoding=\"UTF-16\"", 1);
    let little: Vec<u8> = [0xff, 0xfe]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let big: Vec<u8> = [0xfe, 0xff]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
        .collect();
    for bytes in [little, big] {
        let doc = parse(&bytes);
        assert_eq!(doc, expected);
        assert!(render(&doc).contains("<dt>Patient</dt><dd>Maria Elena Lopez</dd>"));
    }
}

#[test]
fn a_reportability_response_shows_its_determination_agency_and_actions() {
    let doc = parse(&fixture("reportability-response.xml"));
    assert!(doc.is_reportability_response());
    let rr = doc.reportability.as_ref().unwrap();
    assert_eq!(
        rr.eicr_id.as_ref().unwrap().root.as_deref(),
        Some("5b1e9c3a-7d2f-4a8b-9c0e-1f2a3b4c5d6e")
    );
    assert_eq!(
        priority_words(rr.priority.as_ref().unwrap()),
        "Action requested"
    );
    assert_eq!(rr.conditions.len(), 1);
    let covid = &rr.conditions[0];
    assert_eq!(covid.condition.as_ref().unwrap().code, "840539006");
    assert_eq!(covid.jurisdictions.len(), 2);

    let state = &covid.jurisdictions[0];
    assert_eq!(state.determination, Some(Determination::Reportable));
    assert_eq!(state.determination.as_ref().unwrap().words(), "Reportable");
    let agency = state.responsible_agency.as_ref().unwrap();
    assert_eq!(agency.name, "Utah Department of Health and Human Services");
    assert_eq!(
        agency.contact,
        ["tel:+1-801-555-0199", "mailto:epi@health.utah.example"]
    );
    assert_eq!(state.timeframe.as_deref(), Some("24 hours"));
    assert_eq!(
        state.reason.as_deref(),
        Some("Positive SARS-CoV-2 nucleic acid test")
    );
    assert_eq!(state.actions.len(), 2);
    assert_eq!(
        state.actions[0].description.as_deref(),
        Some("Complete the COVID-19 case investigation form")
    );
    assert_eq!(
        priority_words(state.actions[0].priority.as_ref().unwrap()),
        "Action requested"
    );

    let county = &covid.jurisdictions[1];
    assert_eq!(
        county.determination.as_ref().unwrap().words(),
        "May be reportable"
    );
    assert_eq!(
        county.responsible_agency.as_ref().unwrap().name,
        "Salt Lake County Health Department"
    );
    assert_eq!(rr.strongest(), Some(&Determination::Reportable));

    let html = render(&doc);
    assert_safe(&html);
    for shown in [
        "<aside class=\"cda-rr\" aria-label=\"Reportability response\"><h3 class=\"cda-rr-title\">Reportability response: Reportable</h3>",
        "<p class=\"cda-rr-priority\">Priority: Action requested</p>",
        "<span class=\"cda-rr-condition-name\">Disease caused by severe acute respiratory syndrome coronavirus 2 (disorder)</span>",
        "<li class=\"cda-rr-determination cda-rr-reportable\"><strong>Reportable</strong> — Utah Department of Health and Human Services \
         (tel:+1-801-555-0199, mailto:epi@health.utah.example); concerning: Both patient home address and provider facility address; \
         report within 24 hours; reason: Positive SARS-CoV-2 nucleic acid test",
        "<li>Action requested: <a class=\"cda-link\" href=\"/leave?to=https%3A%2F%2Fhealth.utah.example%2Fforms%2Fcovid-19%3Fcase%3D1\" \
         rel=\"noopener noreferrer\" title=\"https://health.utah.example/forms/covid-19?case=1\">Complete the COVID-19 case investigation form</a></li>",
        // The second resource's javascript: URL is not shown at all.
        "<li>Information only: Isolation guidance for patients</li>",
        "<li class=\"cda-rr-determination cda-rr-may-be-reportable\"><strong>May be reportable</strong> — Salt Lake County Health Department",
        "<p class=\"cda-rr-eicr\">In answer to case report 5b1e9c3a-7d2f-4a8b-9c0e-1f2a3b4c5d6e.</p>",
        "<dt>Author</dt><dd>AIMS decision support, APHL AIMS Platform</dd>",
    ] {
        assert!(html.contains(shown), "{shown} not in {html}");
    }
    // The card comes before the sections.
    assert!(html.find("cda-rr\"").unwrap() < html.find("cda-section\"").unwrap());
}

#[test]
fn the_eicr_fixture_is_the_case_report_the_response_answers() {
    let eicr = parse(&fixture("eicr.xml"));
    assert!(!eicr.is_reportability_response());
    assert_eq!(
        eicr.document_type.as_ref().unwrap().code,
        EICR_DOCUMENT_CODE
    );
    assert!(eicr.reportability.is_none());
    let rr = parse(&fixture("reportability-response.xml"));
    let answered = rr.reportability.unwrap().eicr_id.unwrap();
    assert_eq!(eicr.id.as_ref(), Some(&answered));
    assert_eq!(answered.extension, None);
}

#[test]
fn refusals_are_one_sentence_each() {
    let small = CdaLimits {
        max_bytes: 1_000,
        ..CdaLimits::default()
    };
    let error = parse_cda(&fixture("referral-note.xml"), &small).unwrap_err();
    assert_eq!(
        error.to_string(),
        "This document is larger than the 1 KB this viewer opens; it was not opened."
    );
    let few_nodes = CdaLimits {
        max_nodes: 100,
        ..CdaLimits::default()
    };
    let error = parse_cda(&fixture("referral-note.xml"), &few_nodes).unwrap_err();
    assert_eq!(error, CdaError::TooManyNodes { limit: 100 });
    let not_cda = parse_cda(
        b"<html xmlns='http://www.w3.org/1999/xhtml'/>",
        &CdaLimits::default(),
    );
    assert_eq!(
        not_cda.unwrap_err().to_string(),
        "This file is XML but not a clinical document (HL7 CDA); it was not opened."
    );
    let no_namespace = parse_cda(b"<ClinicalDocument/>", &CdaLimits::default());
    assert_eq!(no_namespace.unwrap_err(), CdaError::NotCda);
    let shift_jis = parse_cda(
        b"<?xml version='1.0' encoding='Shift_JIS'?><ClinicalDocument/>",
        &CdaLimits::default(),
    );
    assert_eq!(
        shift_jis.unwrap_err().to_string(),
        "This document is written in a character encoding this viewer cannot read (\u{201c}Shift_JIS\u{201d}); it was not opened."
    );
    for error in [
        CdaError::BadText { encoding: "UTF-8" },
        CdaError::Dtd,
        CdaError::TooDeep { limit: 256 },
        CdaError::Malformed { line: 3 },
    ] {
        let sentence = error.to_string();
        assert!(sentence.starts_with("This ") && sentence.ends_with("it was not opened."));
        assert_eq!(sentence.matches(". ").count(), 0, "{sentence}");
    }
}

#[test]
fn cut_or_corrupted_documents_never_panic() {
    let whole = fixture("referral-note.xml");
    for cut in (0..whole.len()).step_by(97) {
        let _ = parse_cda(&whole[..cut], &CdaLimits::default()).map(|doc| render(&doc));
    }
    let hostile = fixture("hostile.xml");
    for at in (0..hostile.len()).step_by(89) {
        let mut bytes = hostile.clone();
        bytes[at] = b'<';
        if let Ok(doc) = parse_cda(&bytes, &CdaLimits::default()) {
            assert_safe(&render(&doc));
        }
    }
}
