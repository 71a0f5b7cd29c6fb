//! Clinical content as a reader meets it: an XDM package shown as a card (patient,
//! sender, documents) with its problems or its refusal, documents opened in the
//! portal's own viewers, C-CDA in the viewer with its sections in a sandboxed frame,
//! hostile documents rendered harmless, the raw XML only as a download, the page
//! before a link leaves the portal, 404 for everyone else, and an audit entry per read.
//!
//! Packages are made here with `write_xdm`; documents come from the content crate's
//! fixtures (`crates/content/tests/fixtures/cda/`).

use std::io::{Cursor, Read as _, Write as _};

use base64::Engine as _;
use directmail_content::xdm::{
    self, Code, Confidentiality, DocumentInput, Sender, XdmInput, write_xdm,
};
use regex::Regex;
use reqwest::StatusCode;

use crate::helpers::{Browser, TestApp, pdf};
use crate::webmail::{Mail, ana_desk, deliver, get_bytes, header, kim_desk, unescape};

// ---------------------------------------------------------------------------------
// fixtures

pub(crate) fn cda_fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/crates/content/tests/fixtures/cda/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A package from Dr Kim Lee at Hillside Care to Dr Ana, about Maria Elena Lopez.
pub(crate) fn package(documents: Vec<DocumentInput<'_>>) -> Vec<u8> {
    write_xdm(&XdmInput {
        now: 1_710_253_800, // 2024-03-12 14:30 UTC
        seed: [7; 16],
        sender: Sender {
            person: Some("Dr Kim Lee".into()),
            institution: Some("Hillside Care".into()),
            address: "dr.kim@direct.hillside.test".into(),
        },
        recipients: vec!["dr.ana@direct.lakeside.test".into()],
        source_id: None,
        patient: Some(xdm::Patient {
            id: Some("998991^^^&2.16.840.1.113883.19.5&ISO".into()),
            family_name: Some("Lopez".into()),
            given_names: Some("Maria Elena".into()),
            birth_date: Some("19580304".into()),
            sex: Some("F".into()),
        }),
        content_type: None,
        documents,
    })
    .unwrap()
}

pub(crate) fn document<'a>(title: &str, mime_type: &str, bytes: &'a [u8]) -> DocumentInput<'a> {
    DocumentInput {
        title: title.into(),
        mime_type: mime_type.into(),
        bytes,
        confidentiality: Confidentiality::Normal,
        creation_time: Some(1_710_253_800),
        type_code: None,
        class_code: None,
        security_labels: Vec::new(),
    }
}

/// The referral note and a letter as a PDF, as a sending EHR would package them.
fn referral_package() -> Vec<u8> {
    let referral = cda_fixture("referral-note.xml");
    let letter = pdf("Dear colleague");
    package(vec![
        DocumentInput {
            type_code: Some(Code {
                code: "57133-1".into(),
                scheme: "2.16.840.1.113883.6.1".into(),
                display: "Referral note".into(),
            }),
            confidentiality: Confidentiality::Restricted,
            ..document("Referral to Cardiology", "text/xml", &referral)
        },
        document("Cover letter", "application/pdf", &letter),
    ])
}

/// Another document about the same patient: the referral note without its Reason for
/// Referral section, under its own title.
fn follow_up_note() -> Vec<u8> {
    let xml = String::from_utf8(cda_fixture("referral-note.xml")).unwrap();
    let comment = xml.find("<!-- Reason for Referral Section").unwrap();
    let start = xml[..comment].rfind("<component>").unwrap();
    let end = comment + xml[comment..].find("</component>").unwrap() + "</component>".len();
    format!("{}{}", &xml[..start], &xml[end..])
        .replacen(
            "<title>Referral to Cardiology</title>",
            "<title>Cardiology follow-up</title>",
            1,
        )
        .into_bytes()
}

/// `zip` with the file `name` changed by `edit` (the ZIP's own checksums made anew,
/// so only the fingerprint in the metadata can tell).
fn tampered(zip: &[u8], name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    let mut files = Vec::new();
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).unwrap();
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        files.push((file.name().to_owned(), content));
    }
    let (_, content) = files.iter_mut().find(|(n, _)| n == name).unwrap();
    edit(content);
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in &files {
        out.start_file(name.as_str(), options).unwrap();
        out.write_all(content).unwrap();
    }
    out.finish().unwrap().into_inner()
}

/// A message to Dr Ana with these attachments, delivered to her Inbox.
async fn received(app: &TestApp, mailbox_id: i64, files: &[(&str, Vec<u8>)]) -> i64 {
    let mut mail = Mail::new(
        "dr.kim@direct.hillside.test",
        "dr.ana@direct.lakeside.test",
        "Referral: Maria Elena Lopez",
        "Please see the attached documents.",
    );
    for (name, data) in files {
        mail = mail.file(name, data.clone());
    }
    deliver(app, mailbox_id, &mail).await
}

/// Audit entries by `actor` for `object`, oldest first, as (action, detail), the
/// detail without a restricted record's label.
async fn reads(app: &TestApp, actor: &str, object: &str) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> =
        directmail::audit::list(&app.state.db, &Default::default(), 5000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.actor == actor && e.object == object)
            // the referral note has a restricted section, so its reads also carry the
            // label (tests/it/sensitive.rs checks that); here, only what was read
            .map(|e| {
                let detail = if e.detail.starts_with("label: ") {
                    String::new()
                } else {
                    e.detail
                        .split("; label: ")
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                };
                (e.action, detail)
            })
            .collect();
    // the log lists the newest first
    entries.reverse();
    entries
}

const ANA: &str = "ana@direct.lakeside.test";

/// The text of the page, markup and escapes removed, white space collapsed.
pub(crate) fn text(body: &str) -> String {
    let tags = Regex::new(r"(?s)<[^>]*>").unwrap();
    let plain = unescape(&tags.replace_all(body, " "));
    plain.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The Reportability Response card of a viewer page.
pub(crate) fn rr_card_of(body: &str) -> String {
    Regex::new(r#"(?s)<section class="rr-card".*?</section>"#)
        .unwrap()
        .find(body)
        .unwrap_or_else(|| panic!("no card: {body}"))
        .as_str()
        .to_owned()
}

/// The `<iframe …>` start tag of a page.
fn iframe(body: &str) -> String {
    Regex::new(r#"<iframe[^>]*>"#)
        .unwrap()
        .find(body)
        .expect("an iframe")
        .as_str()
        .to_owned()
}

fn assert_sandboxed_frame_policy(headers: &reqwest::header::HeaderMap) {
    let csp = header(headers, "content-security-policy");
    assert!(csp.starts_with("sandbox "), "{csp}");
    assert!(
        !csp.contains("allow-scripts") && !csp.contains("allow-same-origin"),
        "{csp}"
    );
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("img-src data:"), "{csp}");
    assert!(
        csp.contains("style-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(header(headers, "x-frame-options"), "SAMEORIGIN");
}

// ---------------------------------------------------------------------------------
// XDM

#[tokio::test]
async fn a_received_xdm_package_shows_its_card_with_the_patient_and_its_documents() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = received(&app, mb.id, &[("records.zip", referral_package())]).await;
    let mut ana = app.signed_in(ANA).await;
    let page = ana.get(&format!("/mail/messages/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let card = Regex::new(r#"(?s)<section class="xdm-card" id="xdm-0".*?</section>"#)
        .unwrap()
        .find(&page.body)
        .unwrap_or_else(|| panic!("no card: {}", page.body))
        .as_str()
        .to_owned();
    let words = text(&card);
    for shown in [
        "Patient Maria Elena Lopez",
        "Patient ID 998991 (2.16.840.1.113883.19.5)",
        "Birth date March 4, 1958",
        "Sex Female",
        "From Dr Kim Lee, Hillside Care (dr.kim@direct.hillside.test)",
        "For dr.ana@direct.lakeside.test",
        "Sent March 12, 2024, 14:30 UTC",
        "Referral to Cardiology Referral note · Clinical document (CDA)",
        "made March 12, 2024, 14:30 UTC · confidentiality: Restricted",
        "Cover letter PDF document",
        "confidentiality: Normal",
    ] {
        assert!(words.contains(shown), "{shown:?} not in {words}");
    }
    assert!(
        card.contains(&format!(
            r#"href="/mail/messages/{id}/attachments/0/xdm/0/cda""#
        )),
        "the CDA opens in the viewer: {card}"
    );
    assert!(
        card.contains(&format!(
            r#"href="/mail/messages/{id}/attachments/0/xdm/1""#
        )),
        "the PDF opens in the browser: {card}"
    );
    // the package's own index page is neither linked nor shown
    assert!(!page.body.contains("INDEX.HTM") && !page.body.to_lowercase().contains("readme"));
    assert!(words.contains("other file(s) of the package"), "{words}");
    // the package itself stays a download
    assert!(page.body.contains(&format!(
        r#"href="/mail/messages/{id}/attachments/0" download"#
    )));

    // the CDA: the document route sends it to the viewer
    let r = ana
        .get(&format!("/mail/messages/{id}/attachments/0/xdm/0"))
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.location(),
        format!("/mail/messages/{id}/attachments/0/xdm/0/cda")
    );
    let viewer = ana.get(&r.location()).await;
    assert_eq!(viewer.status, StatusCode::OK);
    let words = text(&viewer.body);
    assert!(words.contains("Referral to Cardiology"), "{words}");
    assert!(words.contains("Patient Maria Elena Lopez"), "{words}");
    assert!(
        iframe(&viewer.body).contains(&format!(
            r#"src="/mail/messages/{id}/attachments/0/xdm/0/cda/frame""#
        )),
        "{}",
        viewer.body
    );
    let frame = ana
        .get(&format!(
            "/mail/messages/{id}/attachments/0/xdm/0/cda/frame"
        ))
        .await;
    assert_eq!(frame.status, StatusCode::OK);
    assert_sandboxed_frame_policy(&frame.headers);
    assert!(frame.body.contains("Reason for Referral"));

    // the PDF: shown by the browser from a sandboxed response, or downloaded
    let (status, headers, bytes) = get_bytes(
        &ana,
        &format!("/mail/messages/{id}/attachments/0/xdm/1?purpose=treatment"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/pdf");
    assert!(header(&headers, "content-disposition").starts_with("inline"));
    assert!(header(&headers, "content-security-policy").starts_with("sandbox"));
    assert_eq!(bytes, pdf("Dear colleague"));
    let (status, headers, bytes) = get_bytes(
        &ana,
        &format!("/mail/messages/{id}/attachments/0/xdm/1?download=1&purpose=treatment"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-disposition").starts_with("attachment"));
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert_eq!(bytes, pdf("Dear colleague"));

    // each of those reads is in the audit log, under the document's place
    assert_eq!(
        reads(&app, ANA, &format!("message:{id}/0/0")).await,
        [
            ("attachment.view".to_owned(), "clinical document".to_owned()),
            (
                "attachment.view".to_owned(),
                "clinical document, rendered".to_owned()
            ),
        ]
    );
    assert_eq!(
        reads(&app, ANA, &format!("message:{id}/0/1")).await,
        [
            ("attachment.view".to_owned(), String::new()),
            ("attachment.download".to_owned(), String::new()),
        ]
    );
}

#[tokio::test]
async fn a_package_card_is_made_once_kept_with_the_message_and_made_again_when_unreadable() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = received(&app, mb.id, &[("records.zip", referral_package())]).await;
    let mut ana = app.signed_in(ANA).await;
    let kept = || async {
        sqlx::query_scalar::<_, Option<String>>("select clinical_cards from messages where id = $1")
            .bind(id)
            .fetch_one(&app.state.db.pool)
            .await
            .unwrap()
    };
    assert_eq!(kept().await, None, "nothing made before the first view");
    let first = text(&ana.get(&format!("/mail/messages/{id}")).await.body);
    assert!(first.contains("Maria Elena Lopez"), "{first}");
    let json = kept().await.expect("the card kept after the first view");
    assert!(json.contains("Maria Elena Lopez"));

    // the next view shows what was kept, without reading the package again
    let marked = json.replace("Maria Elena Lopez", "Kept Card Patient");
    sqlx::query("update messages set clinical_cards = $1 where id = $2")
        .bind(&marked)
        .bind(id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let second = text(&ana.get(&format!("/mail/messages/{id}")).await.body);
    assert!(second.contains("Kept Card Patient"), "{second}");

    // a kept value that does not read (an older shape, damage) is made again
    sqlx::query("update messages set clinical_cards = '[{\"Xdm\": 7}]' where id = $1")
        .bind(id)
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    let third = text(&ana.get(&format!("/mail/messages/{id}")).await.body);
    assert!(third.contains("Maria Elena Lopez"), "{third}");
    assert!(kept().await.unwrap().contains("Maria Elena Lopez"));
}

#[tokio::test]
async fn a_tampered_document_in_a_package_says_it_does_not_match_its_fingerprint() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let zip = tampered(&referral_package(), "IHE_XDM/SUBSET01/DOC0001.XML", |xml| {
        let at = xml.windows(10).position(|w| w == b"Cardiology").unwrap();
        xml[at..at + 10].copy_from_slice(b"Dermatolog");
    });
    let id = received(&app, mb.id, &[("records.zip", zip)]).await;
    let mut ana = app.signed_in(ANA).await;
    let page = ana.get(&format!("/mail/messages/{id}")).await;
    let words = text(&page.body);
    let sentence = "The document “Referral to Cardiology” does not match the fingerprint its sender recorded; it may have been changed.";
    assert!(words.contains(sentence), "{words}");
    // the document still opens, with the warning above it
    let viewer = ana
        .get(&format!("/mail/messages/{id}/attachments/0/xdm/0/cda"))
        .await;
    assert_eq!(viewer.status, StatusCode::OK);
    assert!(
        viewer.by_id("package-problems").is_some() && text(&viewer.body).contains(sentence),
        "{}",
        viewer.body
    );
    // the untouched letter carries no warning of its own
    let words = text(&page.body);
    assert_eq!(words.matches("does not match the fingerprint").count(), 1);
}

#[tokio::test]
async fn a_zip_bomb_package_shows_why_it_was_refused_and_stays_downloadable() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    // 8 MB of zeros deflate to a few kilobytes: a thousand times their stored size
    let zeros = vec![0u8; 8 << 20];
    let bomb = package(vec![document("Notes", "text/plain", &zeros)]);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let id = received(&app, mb.id, &[("records.zip", bomb.clone())]).await;
    let mut ana = app.signed_in(ANA).await;
    let page = ana.get(&format!("/mail/messages/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let words = text(&page.body);
    assert!(
        words.contains(
            "The XDM package was not opened: the file “IHE_XDM/SUBSET01/DOC0001.TXT” in it expands to far more than its stored size, a pattern used to overwhelm computer systems."
        ),
        "{words}"
    );
    assert!(words.contains("The package can still be downloaded as it is."));
    assert!(!page.body.contains("/xdm/0"), "no document is offered");
    let (status, headers, bytes) =
        get_bytes(&ana, &format!("/mail/messages/{id}/attachments/0")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-disposition").starts_with("attachment"));
    assert_eq!(bytes, bomb);
    let (status, _, _) = get_bytes(&ana, &format!("/mail/messages/{id}/attachments/0/xdm/0")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------
// the C-CDA viewer

#[tokio::test]
async fn the_cda_viewer_shows_the_patient_and_the_sections_and_remembers_collapsed_ones() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = received(
        &app,
        mb.id,
        &[("referral.xml", cda_fixture("referral-note.xml"))],
    )
    .await;
    let mut ana = app.signed_in(ANA).await;
    let page = ana.get(&format!("/mail/messages/{id}")).await;
    let viewer_path = format!("/mail/messages/{id}/attachments/0/cda");
    assert!(
        page.body.contains(&format!(r#"href="{viewer_path}""#)),
        "recognised by its content, whatever its name or type: {}",
        page.body
    );

    let viewer = ana.get(&viewer_path).await;
    assert_eq!(viewer.status, StatusCode::OK);
    let words = text(&viewer.body);
    for shown in [
        "Referral to Cardiology",
        "Patient Maria Elena Lopez",
        "Birth date March 4, 1958",
        "Sex Female",
        "Document type Referral note",
        "Confidentiality Normal",
    ] {
        assert!(words.contains(shown), "{shown:?} not in {words}");
    }
    // the sections, in the preferred order, each with a box to collapse it
    let boxes: Vec<String> = Regex::new(r#"name="collapsed" value="([^"]+)"> ([^<]+)</label>"#)
        .unwrap()
        .captures_iter(&viewer.body)
        .map(|c| format!("{} {}", &c[1], unescape(&c[2])))
        .collect();
    assert_eq!(
        boxes[..5],
        [
            "42349-1 Reason for Referral",
            "11450-4 Problems",
            "10160-0 Medications",
            "48765-2 Allergies",
            "30954-2 Results"
        ]
    );
    assert!(
        viewer
            .body
            .contains(r#"<script src="/static/cda.js" defer></script>"#)
    );
    let frame_tag = iframe(&viewer.body);
    assert!(
        frame_tag.contains(r#"sandbox="allow-popups allow-popups-to-escape-sandbox""#),
        "{frame_tag}"
    );
    assert!(
        frame_tag.contains(&format!(r#"src="{viewer_path}/frame""#)),
        "{frame_tag}"
    );
    assert!(
        viewer.body.contains(&format!(
            r#"href="/mail/messages/{id}/attachments/0" download id="raw-xml""#
        )),
        "{}",
        viewer.body
    );

    // the frame: our rendering, our stylesheet, the sandbox policy
    let frame = ana.get(&format!("{viewer_path}/frame")).await;
    assert_eq!(frame.status, StatusCode::OK);
    assert_sandboxed_frame_policy(&frame.headers);
    assert!(
        frame
            .body
            .contains(r#"<link rel="stylesheet" href="/static/cda.css">"#)
    );
    for title in [
        "Reason for Referral",
        "Problems",
        "Medications",
        "Plan of Treatment",
    ] {
        assert!(
            frame
                .body
                .contains(&format!("<span class=\"cda-section-title\">{title}</span>")),
            "{title}"
        );
    }
    assert!(
        frame
            .body
            .contains(r#"data-loinc="11450-4"><details open>"#)
    );
    // links out go through the leaving page, in a new window
    assert!(frame.body.contains(
        r#"href="/leave?to=https%3A%2F%2Fwww.example.org%2Fguidelines%2Fchest-pain%3Fref%3Dcda%26v%3D2" rel="noopener noreferrer" target="_blank""#
    ), "{}", frame.body);
    // sections the user collapsed (the page's script asks for them by code)
    let frame = ana
        .get(&format!(
            "{viewer_path}/frame?collapsed=11450-4&collapsed=%22%3E%3Cscript%3E&collapsed=10160-0"
        ))
        .await;
    assert!(
        frame
            .body
            .contains(r#"data-loinc="11450-4"><details><summary>"#)
    );
    assert!(
        frame
            .body
            .contains(r#"data-loinc="10160-0"><details><summary>"#)
    );
    assert!(
        frame
            .body
            .contains(r#"data-loinc="42349-1"><details open>"#)
    );
    assert!(!frame.body.contains("<script"));

    // the stylesheet and the script are files of ours
    let (status, headers, _) = get_bytes(&ana, "/static/cda.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-type").starts_with("text/css"));
    let (status, _, script) = get_bytes(&ana, "/static/cda.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&script).contains("localStorage"));
}

/// The section titles of a rendered frame, in the order shown.
fn section_titles(frame: &str) -> Vec<String> {
    Regex::new(r#"<span class="cda-section-title">([^<]+)</span>"#)
        .unwrap()
        .captures_iter(frame)
        .map(|c| unescape(&c[1]))
        .collect()
}

/// The codes of the viewer page's boxes (every section that can be collapsed), in
/// the order listed.
fn listed(page: &str) -> Vec<String> {
    Regex::new(r#"name="collapsed" value="([^"]+)""#)
        .unwrap()
        .captures_iter(page)
        .map(|c| c[1].to_owned())
        .collect()
}

/// What a browser without scripts asks for when `button` (its accessible name or id)
/// of the sections form is pressed: the button's `formaction` with the form's fields
/// in tree order (the hidden `order` fields, the checked boxes, the button).
fn press(page: &str, button: &str) -> String {
    let form = Regex::new(r#"(?s)<form[^>]*id="cda-sections".*?</form>"#)
        .unwrap()
        .find(page)
        .expect("the sections form")
        .as_str();
    let attr = |tag: &str, name: &str| {
        Regex::new(&format!(r#"\s{name}="([^"]*)""#))
            .unwrap()
            .captures(tag)
            .map(|c| unescape(&c[1]))
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    let mut action = None;
    for tag in Regex::new(r#"<(?:input|button)\b[^>]*>"#)
        .unwrap()
        .find_iter(form)
        .map(|m| m.as_str())
    {
        let (Some(name), Some(value)) = (attr(tag, "name"), attr(tag, "value")) else {
            continue;
        };
        if tag.starts_with("<button") {
            if [attr(tag, "aria-label"), attr(tag, "id")].contains(&Some(button.to_owned())) {
                action = attr(tag, "formaction");
                query.append_pair(&name, &value);
            }
        } else if !tag.contains(r#"type="checkbox""#) || tag.contains(" checked") {
            query.append_pair(&name, &value);
        }
    }
    format!(
        "{}?{}",
        action.unwrap_or_else(|| panic!("no button {button:?} in {form}")),
        query.finish()
    )
}

#[tokio::test]
async fn the_cda_viewer_puts_sections_in_the_order_asked_for_and_moves_them_without_javascript() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = received(
        &app,
        mb.id,
        &[("referral.xml", cda_fixture("referral-note.xml"))],
    )
    .await;
    let mut ana = app.signed_in(ANA).await;
    let viewer_path = format!("/mail/messages/{id}/attachments/0/cda");
    let default_titles = [
        "Reason for Referral",
        "Problems",
        "Medications",
        "Allergies",
        "Results",
        "Social History",
        "Mental Status",
        "Plan of Treatment",
        "Patient Instructions",
    ];
    let frame = ana.get(&format!("{viewer_path}/frame")).await;
    assert_eq!(section_titles(&frame.body), default_titles);

    // the frame puts the sections named first, in that order, the rest after as by
    // default; a code the document lacks and anything that is not a code are ignored
    let long = "1".repeat(33);
    let frame = ana
        .get(&format!(
            "{viewer_path}/frame?order=10160-0&order=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E\
             &order=8716-3&order=29762-2&order=11450-4%22&order={long}&order=&collapsed=29762-2"
        ))
        .await;
    assert_eq!(frame.status, StatusCode::OK);
    assert_sandboxed_frame_policy(&frame.headers);
    assert_eq!(
        section_titles(&frame.body),
        [
            "Medications",
            "Social History",
            "Reason for Referral",
            "Problems",
            "Allergies",
            "Results",
            "Mental Status",
            "Plan of Treatment",
            "Patient Instructions",
        ]
    );
    assert!(
        frame
            .body
            .contains(r#"data-loinc="29762-2"><details><summary>"#),
        "collapsed as well as moved"
    );
    assert!(!frame.body.contains("<script") && !frame.body.contains("alert(1)"));
    assert!(!frame.body.contains(&long));
    // only hostile values: the default order
    let frame = ana
        .get(&format!(
            "{viewer_path}/frame?order=%3Cb%3E&order=a%20b&order=javascript%3Aalert(1)"
        ))
        .await;
    assert_eq!(frame.status, StatusCode::OK);
    assert_eq!(section_titles(&frame.body), default_titles);

    // the viewer page lists the sections in the order of its own query, checks the
    // boxes of its own query, and asks for the frame with both
    let viewer = ana
        .get(&format!(
            "{viewer_path}?order=10160-0&order=29762-2&order=%22%3E&collapsed=11450-4"
        ))
        .await;
    assert_eq!(viewer.status, StatusCode::OK);
    assert_eq!(
        listed(&viewer.body),
        [
            "10160-0", "29762-2", "42349-1", "11450-4", "48765-2", "30954-2", "10190-7", "18776-5",
            "69730-0"
        ]
    );
    assert!(
        viewer
            .body
            .contains(r#"name="collapsed" value="11450-4" checked>"#)
    );
    assert!(!viewer.body.contains(r#"value="42349-1" checked"#));
    let frame_tag = unescape(&iframe(&viewer.body));
    assert!(
        frame_tag.contains(&format!(
            r#"src="{viewer_path}/frame?order=10160-0&order=29762-2&collapsed=11450-4""#
        )),
        "{frame_tag}"
    );
    // a move button per section, named for it; none past either end
    for label in [
        "Move up: Problems",
        "Move down: Problems",
        "Move down: Medications",
        "Move up: Plan of Treatment",
    ] {
        assert!(
            viewer.body.contains(&format!(r#"aria-label="{label}">"#)),
            "{label}"
        );
    }
    for end in ["Move up: Medications", "Move down: Plan of Treatment"] {
        assert!(
            viewer
                .body
                .contains(&format!(r#"aria-label="{end}" hidden>"#)),
            "{end}"
        );
    }
    assert!(
        !viewer.body.contains("Move up: Patient Instructions"),
        "a nested section moves with its parent, not on its own"
    );

    // Without scripts, "Move up: Problems" asks for the page again, which sends the
    // browser to it in the new order, the boxes kept, at the section moved. Nothing
    // is read by the redirect itself.
    let audited = reads(&app, ANA, &format!("message:{id}/0")).await.len();
    let moved = ana.get(&press(&viewer.body, "Move up: Problems")).await;
    assert_eq!(moved.status, StatusCode::SEE_OTHER, "{}", moved.body);
    let new_order = "order=10160-0&order=29762-2&order=11450-4&order=42349-1&order=48765-2\
                     &order=30954-2&order=10190-7&order=18776-5";
    assert_eq!(
        moved.location(),
        format!("{viewer_path}?{new_order}&collapsed=11450-4#cda-s-11450-4")
    );
    assert_eq!(
        reads(&app, ANA, &format!("message:{id}/0")).await.len(),
        audited
    );
    let viewer = ana
        .get(&format!("{viewer_path}?{new_order}&collapsed=11450-4"))
        .await;
    assert_eq!(
        listed(&viewer.body)[..4],
        ["10160-0", "29762-2", "11450-4", "42349-1"]
    );
    let src = unescape(&iframe(&viewer.body));
    let frame = ana
        .get(
            Regex::new(r#"src="([^"]+)""#)
                .unwrap()
                .captures(&src)
                .unwrap()[1]
                .to_string()
                .as_str(),
        )
        .await;
    assert_eq!(
        section_titles(&frame.body)[..4],
        [
            "Medications",
            "Social History",
            "Problems",
            "Reason for Referral"
        ]
    );
    // down, and at the end of the list: nothing moves
    let moved = ana
        .get(&press(&viewer.body, "Move down: Medications"))
        .await;
    assert!(
        moved.location().starts_with(&format!(
            "{viewer_path}?order=29762-2&order=10160-0&order=11450-4"
        )),
        "{}",
        moved.location()
    );
    let moved = ana
        .get(&format!("{viewer_path}?{new_order}&move=18776-5%3Adown"))
        .await;
    assert_eq!(
        moved.location(),
        format!("{viewer_path}?{new_order}#cda-s-18776-5")
    );

    // "Reset order" goes back to the preferred order, the boxes kept
    let reset = ana.get(&press(&viewer.body, "cda-reset-order")).await;
    assert_eq!(reset.status, StatusCode::SEE_OTHER);
    assert_eq!(
        reset.location(),
        format!("{viewer_path}?collapsed=11450-4#cda-sections")
    );
    let viewer = ana.get(&format!("{viewer_path}?collapsed=11450-4")).await;
    assert_eq!(
        listed(&viewer.body)[..5],
        ["42349-1", "11450-4", "10160-0", "48765-2", "30954-2"]
    );
}

#[tokio::test]
async fn a_hostile_cda_renders_no_script_handler_javascript_link_or_outside_image() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = received(&app, mb.id, &[("consult.xml", cda_fixture("hostile.xml"))]).await;
    let mut ana = app.signed_in(ANA).await;
    let viewer = ana
        .get(&format!("/mail/messages/{id}/attachments/0/cda"))
        .await;
    assert_eq!(viewer.status, StatusCode::OK);
    let frame = ana
        .get(&format!("/mail/messages/{id}/attachments/0/cda/frame"))
        .await;
    assert_eq!(frame.status, StatusCode::OK);
    assert_sandboxed_frame_policy(&frame.headers);
    // What the document wrote may show as text (escaped); none of it may be markup.
    let handler = Regex::new(r#"\son[a-z]+\s*="#).unwrap();
    let markup = Regex::new(r"<[a-zA-Z!/][^>]*>").unwrap();
    for (what, body) in [("page", &viewer.body), ("frame", &frame.body)] {
        let tags: Vec<String> = markup
            .find_iter(body)
            .map(|tag| tag.as_str().to_ascii_lowercase())
            .collect();
        for tag in &tags {
            assert!(!handler.is_match(tag), "{what}: {tag}");
            for forbidden in [
                "javascript:",
                "vbscript:",
                "data:text",
                "tracker.example",
                "attacker.example",
                " style=",
                "<object",
                "<embed",
                "<style",
            ] {
                assert!(!tag.contains(forbidden), "{what}: {tag}");
            }
            // the page's own script and frame are ours; none come from the document
            if tag.starts_with("<script") {
                assert!(tag.starts_with(r#"<script src="/static/"#), "{what}: {tag}");
            }
            if tag.starts_with("<img") {
                assert!(tag.contains(r#"src="data:image/"#), "{what}: {tag}");
            }
        }
        if what == "frame" {
            assert!(!tags.iter().any(|t| t.starts_with("<iframe")), "{body}");
            assert!(!tags.iter().any(|t| t.starts_with("<script")), "{body}");
        }
        // and the document's script text is escaped where it shows
        assert!(!body.contains("<script>alert"), "{what}: {body}");
    }
    let words = text(&frame.body);
    assert!(words.contains("Patient seen for follow-up."), "{words}");
    assert!(words.contains("click me"), "the link's text stays: {words}");
    assert!(
        words.contains("Parts of this document were left out or shown as plain text for safety"),
        "{words}"
    );
}

#[tokio::test]
async fn the_raw_xml_is_a_download_and_a_cda_that_cannot_be_read_says_why() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let referral = cda_fixture("referral-note.xml");
    let dtd = cda_fixture("dtd.xml");
    let id = received(
        &app,
        mb.id,
        &[
            ("referral.xml", referral.clone()),
            ("entities.xml", dtd.clone()),
            ("records.zip", referral_package()),
        ],
    )
    .await;
    let mut ana = app.signed_in(ANA).await;
    // the referral note has a restricted section: the attachment route asks why first
    // (docs/sensitive-records.md); these requests carry the answer
    for path in [
        format!("/mail/messages/{id}/attachments/0?purpose=treatment"),
        format!("/mail/messages/{id}/attachments/0?inline=1&purpose=treatment"),
    ] {
        let (status, headers, bytes) = get_bytes(&ana, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            header(&headers, "content-disposition").starts_with("attachment;"),
            "{path}"
        );
        assert_eq!(header(&headers, "content-type"), "application/octet-stream");
        assert_eq!(bytes, referral);
    }
    let (status, headers, bytes) = get_bytes(
        &ana,
        &format!("/mail/messages/{id}/attachments/2/xdm/0?download=1&purpose=treatment"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-disposition").starts_with("attachment;"));
    assert_eq!(bytes, referral);

    // a document with a DTD is recognised, not opened, and offered as a file
    let page = ana.get(&format!("/mail/messages/{id}")).await;
    assert!(
        page.body
            .contains(&format!(r#"href="/mail/messages/{id}/attachments/1/cda""#))
    );
    let viewer = ana
        .get(&format!("/mail/messages/{id}/attachments/1/cda"))
        .await;
    assert_eq!(viewer.status, StatusCode::OK);
    assert!(viewer.body.contains(r#"id="cda-refused""#));
    let words = text(&viewer.body);
    assert!(
        words.contains(
            "This document declares a DTD, which is not allowed in a clinical document; it was not opened."
        ),
        "{words}"
    );
    assert!(!viewer.body.contains("<iframe"), "nothing is rendered");
    assert!(!words.contains("/etc/passwd"));
    assert!(viewer.body.contains(&format!(
        r#"href="/mail/messages/{id}/attachments/1" download id="raw-xml""#
    )));
}

#[tokio::test]
async fn a_non_xml_body_is_shown_by_the_file_viewers_and_never_as_html() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    // a scanned letter as the body of a CDA
    let letter = pdf("Scanned letter");
    let with_pdf = String::from_utf8(cda_fixture("hostile-nonxml-html.xml"))
        .unwrap()
        .replace("text/html", "application/pdf");
    let start = with_pdf.find("PGh0").unwrap();
    let end = with_pdf.find("</text>").unwrap();
    let with_pdf = format!(
        "{}{}{}",
        &with_pdf[..start],
        base64::engine::general_purpose::STANDARD.encode(&letter),
        &with_pdf[end..]
    );
    let id = received(
        &app,
        mb.id,
        &[
            ("summary.xml", cda_fixture("hostile-nonxml-html.xml")),
            ("scan.xml", with_pdf.into_bytes()),
        ],
    )
    .await;
    let mut ana = app.signed_in(ANA).await;

    // the HTML body: a download, whatever is asked
    let viewer = ana
        .get(&format!("/mail/messages/{id}/attachments/0/cda"))
        .await;
    assert_eq!(viewer.status, StatusCode::OK);
    assert!(text(&viewer.body).contains("The content of this document is a file (text/html)"));
    assert!(!viewer.body.contains("alert("));
    let frame = ana
        .get(&format!("/mail/messages/{id}/attachments/0/cda/frame"))
        .await;
    assert!(!frame.body.contains("alert(") && !frame.body.contains("tracker.example"));
    let (status, headers, bytes) = get_bytes(
        &ana,
        &format!("/mail/messages/{id}/attachments/0/cda/file?inline=1"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&headers, "content-disposition").starts_with("attachment;"));
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert!(String::from_utf8_lossy(&bytes).contains("<script>"));

    // the PDF body: through the PDF viewer, after the checks
    let viewer = ana
        .get(&format!("/mail/messages/{id}/attachments/1/cda"))
        .await;
    let open = format!("/mail/messages/{id}/attachments/1/cda/file?inline=1");
    assert!(
        viewer.body.contains(&format!(r#"href="{open}""#)),
        "{}",
        viewer.body
    );
    let (status, headers, bytes) = get_bytes(&ana, &open).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/pdf");
    assert!(header(&headers, "content-disposition").starts_with("inline"));
    assert!(header(&headers, "content-security-policy").starts_with("sandbox"));
    assert_eq!(bytes, letter);
    assert_eq!(
        reads(&app, ANA, &format!("message:{id}/1")).await,
        [
            ("attachment.view".to_owned(), "clinical document".to_owned()),
            (
                "attachment.view".to_owned(),
                "clinical document, its file".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn a_reportability_response_shows_as_a_card_with_what_is_asked_of_the_provider() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let id = received(
        &app,
        mb.id,
        &[("rr.xml", cda_fixture("reportability-response.xml"))],
    )
    .await;
    let mut ana = app.signed_in(ANA).await;
    let viewer = ana
        .get(&format!("/mail/messages/{id}/attachments/0/cda"))
        .await;
    assert_eq!(viewer.status, StatusCode::OK);
    let card = rr_card_of(&viewer.body);
    let words = text(&card);
    for shown in [
        "Reportability response: Reportable",
        "Priority: Action requested",
        "Disease caused by severe acute respiratory syndrome coronavirus 2 (disorder)",
        "Reportable — Utah Department of Health and Human Services (tel:+1-801-555-0199, mailto:epi@health.utah.example)",
        "Report within 24 hours.",
        "May be reportable — Salt Lake County Health Department",
        "Asked of you: Action requested: Complete the COVID-19 case investigation form",
    ] {
        assert!(words.contains(shown), "{shown:?} not in {words}");
    }
    assert!(
        card.contains(
            r#"href="/leave?to=https%3A%2F%2Fhealth.utah.example%2Fforms%2Fcovid-19%3Fcase%3D1" rel="noopener noreferrer""#
        ),
        "{card}"
    );
}

// ---------------------------------------------------------------------------------
// leaving the portal

#[tokio::test]
async fn the_leaving_page_shows_a_web_address_and_refuses_anything_else() {
    let app = TestApp::spawn().await;
    ana_desk(&app).await;
    let mut ana = app.signed_in(ANA).await;
    let page = ana
        .get(
            "/leave?to=https%3A%2F%2Fwww.example.org%2Fguidelines%2Fchest-pain%3Fref%3Dcda%26v%3D2",
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.by_id("leave-url").map(|url| unescape(&url)).as_deref(),
        Some("https://www.example.org/guidelines/chest-pain?ref=cda&v=2")
    );
    assert_eq!(page.by_id("leave-host").as_deref(), Some("www.example.org"));
    let link = Regex::new(r#"<a [^>]*id="leave-continue"[^>]*>"#)
        .unwrap()
        .find(&page.body)
        .unwrap()
        .as_str()
        .to_owned();
    assert!(link.contains(r#"rel="noopener noreferrer""#), "{link}");
    assert!(
        link.contains(r#"href="https://www.example.org/guidelines/chest-pain?ref=cda&#38;v=2""#)
            || link.contains(
                r#"href="https://www.example.org/guidelines/chest-pain?ref=cda&amp;v=2""#
            ),
        "{link}"
    );

    for refused in [
        "javascript%3Aalert(document.cookie)",
        "%20JaVaScRiPt%3Aalert(1)",
        "data%3Atext%2Fhtml%2C%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "https%3A%2F%2Fbank.example%40evil.example%2F",
        "%2Fmail",
    ] {
        let page = ana.get(&format!("/leave?to={refused}")).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{refused}");
        assert!(
            text(&page.body).contains("This link was not followed: only web addresses"),
            "{}",
            page.body
        );
        assert!(!page.body.contains("alert("), "{}", page.body);
    }

    // without the session cookie (a link from the sandboxed frame does not carry it),
    // the page asks for itself again from our origin, and touches no cookie
    let stranger = app.browser();
    let (status, headers, body) =
        get_bytes(&stranger, "/leave?to=https%3A%2F%2Fa.example%2F").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("set-cookie").is_none());
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.contains(r#"<meta http-equiv="refresh" content="0; url=/leave?to=https%3A%2F%2Fa.example%2F&#38;again=1">"#)
            || body.contains(r#"<meta http-equiv="refresh" content="0; url=/leave?to=https%3A%2F%2Fa.example%2F&amp;again=1">"#),
        "{body}"
    );
    assert!(
        !body.contains("a.example/\""),
        "the address is not shown: {body}"
    );
    let (status, headers, _) =
        get_bytes(&stranger, "/leave?to=https%3A%2F%2Fa.example%2F&again=1").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(header(&headers, "location").starts_with("/login"));
}

// ---------------------------------------------------------------------------------
// everyone else

#[tokio::test]
async fn another_organizations_member_gets_404_on_every_clinical_route_and_nothing_is_audited() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    kim_desk(&app).await;
    let id = received(
        &app,
        mb.id,
        &[
            ("referral.xml", cda_fixture("referral-note.xml")),
            ("records.zip", referral_package()),
        ],
    )
    .await;
    let mut kim: Browser = app.signed_in("kim@direct.hillside.test").await;
    let routes = [
        format!("/mail/messages/{id}/attachments/0/cda"),
        format!("/mail/messages/{id}/attachments/0/cda/frame"),
        format!("/mail/messages/{id}/attachments/0/cda/frame?collapsed=11450-4"),
        format!("/mail/messages/{id}/attachments/0/cda/frame?order=10160-0"),
        format!("/mail/messages/{id}/attachments/0/cda?order=10160-0&move=10160-0%3Adown"),
        format!("/mail/messages/{id}/attachments/0/cda?reset=order"),
        format!("/mail/messages/{id}/attachments/0/cda/file"),
        format!("/mail/messages/{id}/attachments/0/cda/file?inline=1"),
        format!("/mail/messages/{id}/attachments/1/xdm/0"),
        format!("/mail/messages/{id}/attachments/1/xdm/1"),
        format!("/mail/messages/{id}/attachments/1/xdm/1?download=1"),
        format!("/mail/messages/{id}/attachments/1/xdm/0/cda"),
        format!("/mail/messages/{id}/attachments/1/xdm/0/cda/frame"),
        format!("/mail/messages/{id}/attachments/1/xdm/0/cda/file"),
    ];
    for route in &routes {
        let page = kim.get(route).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{route}");
        assert!(!page.body.contains("Lopez"), "{route}: {}", page.body);
    }
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 5000)
        .await
        .unwrap();
    assert!(
        !entries
            .iter()
            .any(|e| e.actor == "kim@direct.hillside.test" && e.object.starts_with("message:")),
        "{entries:?}"
    );
    // Dr Ana, whose message it is, can open every one of them
    let mut ana = app.signed_in(ANA).await;
    for route in &routes {
        let page = ana.get(route).await;
        assert!(
            page.status == StatusCode::OK
                || page.status == StatusCode::SEE_OTHER
                || (page.status == StatusCode::NOT_FOUND && route.contains("/cda/file")),
            "{route}: {}",
            page.status
        );
    }
}

#[tokio::test]
async fn each_read_of_clinical_content_writes_an_audit_entry() {
    let app = TestApp::spawn().await;
    let mb = ana_desk(&app).await;
    let notes = b"Follow up in two weeks.\n".to_vec();
    let zip = package(vec![
        document("Referral", "text/xml", &cda_fixture("referral-note.xml")),
        document("Notes", "text/plain", &notes),
    ]);
    let id = received(
        &app,
        mb.id,
        &[
            ("referral.xml", cda_fixture("referral-note.xml")),
            ("records.zip", zip),
        ],
    )
    .await;
    let mut ana = app.signed_in(ANA).await;
    let view = |detail: &str| ("attachment.view".to_owned(), detail.to_owned());

    ana.get(&format!("/mail/messages/{id}/attachments/0/cda"))
        .await;
    ana.get(&format!("/mail/messages/{id}/attachments/0/cda/frame"))
        .await;
    ana.get(&format!(
        "/mail/messages/{id}/attachments/0/cda/frame?collapsed=11450-4"
    ))
    .await;
    assert_eq!(
        reads(&app, ANA, &format!("message:{id}/0")).await,
        [
            view("clinical document"),
            view("clinical document, rendered"),
            view("clinical document, rendered"),
        ]
    );

    // plain text from a package: shown escaped in a page of ours
    let page = ana
        .get(&format!("/mail/messages/{id}/attachments/1/xdm/1"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.by_id("text-document").as_deref(),
        Some("Follow up in two weeks.\n")
    );
    ana.get(&format!("/mail/messages/{id}/attachments/1/xdm/0/cda"))
        .await;
    ana.get(&format!(
        "/mail/messages/{id}/attachments/1/xdm/0/cda/frame"
    ))
    .await;
    let (status, _, _) = get_bytes(
        &ana,
        &format!("/mail/messages/{id}/attachments/1/xdm/0?download=1&purpose=treatment"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        reads(&app, ANA, &format!("message:{id}/1/1")).await,
        [view("")]
    );
    assert_eq!(
        reads(&app, ANA, &format!("message:{id}/1/0")).await,
        [
            view("clinical document"),
            view("clinical document, rendered"),
            ("attachment.download".to_owned(), String::new()),
        ]
    );
    // a document that is not there is no read
    let (status, _, _) = get_bytes(&ana, &format!("/mail/messages/{id}/attachments/1/xdm/9")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        reads(&app, ANA, &format!("message:{id}/1/9"))
            .await
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------
// in a real browser

pub(crate) mod chromium {
    use std::time::{Duration, Instant};

    use fantoccini::{Client, Locator};

    use super::{ANA, cda_fixture, follow_up_note, received, referral_package};
    use crate::browser::{Driver, arrive, chromium, fill, path, start_driver};
    use crate::browser_mail::axe_problems;
    use crate::helpers::{PASSWORD, TestApp};
    use crate::webmail::ana_desk;

    pub(crate) async fn sign_in(c: &Client, app: &TestApp) {
        c.goto(&app.url("/login")).await.unwrap();
        fill(c, "#email", ANA).await;
        fill(c, "#password", PASSWORD).await;
        c.find(Locator::Css("main form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        arrive(c, "/").await;
    }

    /// Dr Ana signed in to Chromium, with a message carrying `files` in her Inbox: the
    /// message, the session, and what must live as long (the driver, the profile).
    async fn ana_in_chromium(
        app: &TestApp,
        files: &[(&str, Vec<u8>)],
    ) -> (i64, Client, (Driver, tempfile::TempDir)) {
        let mb = ana_desk(app).await;
        let id = received(app, mb.id, files).await;
        let driver = start_driver();
        let profile = tempfile::tempdir().unwrap();
        let c = chromium(&driver, profile.path()).await;
        sign_in(&c, app).await;
        (id, c, (driver, profile))
    }

    async fn script(c: &Client, js: &str) -> serde_json::Value {
        c.execute(js, vec![]).await.unwrap()
    }

    /// Waits until `js` (run in the page) returns true.
    async fn until(c: &Client, js: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while script(c, js).await.as_bool() != Some(true) {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn the_viewer_styles_its_frame_remembers_collapsed_sections_and_leaves_through_the_signed_in_page()
     {
        let app = TestApp::spawn().await;
        let (id, c, _browser) = ana_in_chromium(
            &app,
            &[
                ("referral.xml", cda_fixture("referral-note.xml")),
                ("records.zip", referral_package()),
            ],
        )
        .await;
        // the message page with the package's card passes axe-core
        c.goto(&app.url(&format!("/mail/messages/{id}")))
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("#xdm-1"))
            .await
            .unwrap();
        assert_eq!(axe_problems(&c).await, Vec::<String>::new(), "message page");

        c.goto(&app.url(&format!("/mail/messages/{id}/attachments/0/cda")))
            .await
            .unwrap();
        assert_eq!(axe_problems(&c).await, Vec::<String>::new(), "viewer page");

        // the frame is styled by our stylesheet, which its CSP allows as 'self'
        c.enter_frame(0).await.unwrap();
        let section = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("section[data-loinc='11450-4'] > details"))
            .await
            .unwrap();
        assert_eq!(
            section.css_value("border-top-style").await.unwrap(),
            "solid",
            "static/cda.css applies inside the sandboxed frame"
        );
        assert!(section.attr("open").await.unwrap().is_some());
        c.enter_parent_frame().await.unwrap();

        // collapse "Problems": remembered, and the frame comes back with it closed
        c.find(Locator::Css("input[name=collapsed][value='11450-4']"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(
            &c,
            "return document.getElementById('cda-frame').src.indexOf('collapsed=11450-4') > 0;",
            "the frame is asked for with Problems collapsed",
        )
        .await;
        assert_eq!(
            script(
                &c,
                "return localStorage.getItem('directmail.cda.collapsed');"
            )
            .await,
            r#"["11450-4"]"#
        );
        assert!(
            script(&c, "return document.getElementById('cda-apply').hidden;")
                .await
                .as_bool()
                .unwrap(),
            "with the script, boxes apply at once"
        );

        // another document: the same section starts collapsed
        c.goto(&app.url(&format!("/mail/messages/{id}/attachments/1/xdm/0/cda")))
            .await
            .unwrap();
        until(
            &c,
            "return document.querySelector(\"input[name=collapsed][value='11450-4']\").checked \
             && document.getElementById('cda-frame').src.indexOf('collapsed=11450-4') > 0;",
            "the other document opens with Problems collapsed",
        )
        .await;

        c.enter_frame(0).await.unwrap();
        let closed = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(
                "section[data-loinc='11450-4'] > details:not([open])",
            ))
            .await;
        assert!(closed.is_ok(), "Problems is rendered closed in the frame");
        c.enter_parent_frame().await.unwrap();

        // A link in the frame opens the leaving page in a new window. The sandboxed
        // frame's navigation carries no SameSite=Strict cookie; the page asks again
        // from our origin, and the second request is signed in.
        let first = c.window().await.unwrap();
        // the whole frame in the window (beside the list of sections it reaches below
        // the fold; chromedriver would aim at the window's edge)
        script(
            &c,
            "document.getElementById('cda-frame').scrollIntoView(); return true;",
        )
        .await;
        c.enter_frame(0).await.unwrap();
        c.wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("a.cda-link"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let other = loop {
            let windows = c.windows().await.unwrap();
            if let Some(w) = windows.into_iter().find(|w| *w != first) {
                break w;
            }
            assert!(Instant::now() < deadline, "no new window");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        c.switch_to_window(other).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while c.find(Locator::Css("#leave-url")).await.is_err() {
            let url = c.current_url().await.unwrap();
            assert!(
                Instant::now() < deadline && path(&c).await == "/leave",
                "the leaving page did not show, at {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            c.find(Locator::Css("#leave-url"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "https://www.example.org/guidelines/chest-pain?ref=cda&v=2"
        );
        // and the first window is still signed in: no cookie was replaced
        c.close_window().await.unwrap();
        c.switch_to_window(first).await.unwrap();
        c.goto(&app.url("/mail")).await.unwrap();
        assert!(path(&c).await.starts_with("/mail/"), "{}", path(&c).await);
        c.close().await.unwrap();
    }

    /// The codes of the sections that can move, as the viewer page lists them.
    const LISTED: &str = "return Array.from(document.querySelectorAll('#cda-section-list > li[data-code]'))\
                          .map(function (li) { return li.getAttribute('data-code'); }).join(' ')";

    /// Runs `js` (which returns true when the frame shows what is expected) inside the
    /// viewer's frame until it does.
    /// What a hostile document could have done, as the browser sees it: elements and
    /// handlers that run code, links that are not ours, and requests to other sites.
    const NOTHING_RUNS: &str = r#"
        // our own scripts (/static/…) and our own sandboxed frame are the only ones
        const scripts = Array.from(document.querySelectorAll('script'))
            .filter(e => !(e.getAttribute('src') || '').startsWith('/static/'));
        const frames = Array.from(document.querySelectorAll('iframe, object, embed, frame'))
            .filter(e => !(e.getAttribute('src') || '').startsWith('/mail/')
                || (e.getAttribute('sandbox') || 'allow-scripts').includes('allow-scripts'));
        const handlers = document.querySelectorAll(
            '[onclick], [onmouseover], [onerror], [onload], [onfocus], [style]');
        const bad = {length: scripts.length + frames.length + handlers.length};
        const links = Array.from(document.querySelectorAll('a[href]'))
            .map(a => a.getAttribute('href'))
            .filter(h => !(h.startsWith('/') || h.startsWith('#')));
        const outside = performance.getEntriesByType('resource')
            .map(e => e.name)
            .filter(n => !n.startsWith(location.origin) && !n.startsWith('data:'));
        return JSON.stringify({bad: bad.length, links, outside});
    "#;

    #[tokio::test]
    async fn a_hostile_clinical_document_runs_nothing_in_the_browser_and_fetches_nothing_outside() {
        let app = TestApp::spawn().await;
        let (id, c, _browser) =
            ana_in_chromium(&app, &[("consult.xml", cda_fixture("hostile.xml"))]).await;
        c.goto(&app.url(&format!("/mail/messages/{id}/attachments/0/cda")))
            .await
            .unwrap();
        // the title is shown, as text
        until(
            &c,
            "return document.querySelector('h1') !== null && document.querySelector('h1').textContent.includes(\"<script>alert('title')</script>\");",
            "the hostile title shown as text",
        )
        .await;
        until_in_frame(
            &c,
            "return document.readyState === 'complete' && document.body.textContent.includes('Patient seen for follow-up.');",
            "the document rendered in the frame",
        )
        .await;
        // no alert opened, in the page or its frame
        assert!(
            c.get_alert_text().await.is_err(),
            "a dialog opened: the document ran code"
        );
        let clean = serde_json::json!({"bad": 0, "links": [], "outside": []}).to_string();
        assert_eq!(
            script(&c, NOTHING_RUNS).await.as_str(),
            Some(clean.as_str()),
            "viewer page"
        );
        c.enter_frame(0).await.unwrap();
        let in_frame: serde_json::Value =
            serde_json::from_str(script(&c, NOTHING_RUNS).await.as_str().unwrap()).unwrap();
        c.enter_parent_frame().await.unwrap();
        assert_eq!(in_frame["bad"], 0, "frame: {in_frame}");
        assert_eq!(
            in_frame["outside"],
            serde_json::json!([]),
            "frame: {in_frame}"
        );
        // links out go through the leaving page; javascript: and vbscript: are gone
        assert_eq!(
            in_frame["links"],
            serde_json::json!([]),
            "links in the frame that are not ours: {in_frame}"
        );
        assert_eq!(axe_problems(&c).await, Vec::<String>::new(), "viewer page");
    }

    async fn until_in_frame(c: &Client, js: &str, what: &str) {
        c.enter_frame(0).await.unwrap();
        until(c, js, what).await;
        c.enter_parent_frame().await.unwrap();
    }

    /// The first section titles the frame shows, joined by `|`, are `titles`.
    fn frame_starts_with(titles: &str) -> String {
        format!(
            "return Array.from(document.querySelectorAll('.cda-section-title'))\
             .map(function (t) {{ return t.textContent; }}).join('|').indexOf('{titles}|') === 0;"
        )
    }

    async fn press(c: &Client, label: &str) {
        c.find(Locator::Css(&format!("button[aria-label='{label}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_section_moved_in_one_document_keeps_its_place_in_the_next_until_the_order_is_reset()
    {
        let app = TestApp::spawn().await;
        let (id, c, _browser) = ana_in_chromium(
            &app,
            &[
                ("referral.xml", cda_fixture("referral-note.xml")),
                ("follow-up.xml", follow_up_note()),
            ],
        )
        .await;
        let first = format!("/mail/messages/{id}/attachments/0/cda");
        c.goto(&app.url(&first)).await.unwrap();
        until(
            &c,
            "return document.getElementById('cda-apply').hidden;",
            "the page's script runs",
        )
        .await;
        assert_eq!(
            script(&c, LISTED).await,
            "42349-1 11450-4 10160-0 48765-2 30954-2 29762-2 10190-7 18776-5",
            "the preferred order, nothing saved"
        );

        // Medications up, twice: moved in the list at once, the page not reloaded, the
        // focus kept on the control, the order kept and the frame asked for in it
        press(&c, "Move up: Medications").await;
        until(
            &c,
            &format!("{LISTED}.indexOf('42349-1 10160-0 11450-4 ') === 0;"),
            "Medications is second in the list",
        )
        .await;
        assert_eq!(
            script(
                &c,
                "return document.activeElement.getAttribute('aria-label');"
            )
            .await,
            "Move up: Medications"
        );
        press(&c, "Move up: Medications").await;
        let moved = "10160-0 42349-1 11450-4 48765-2 30954-2 29762-2 10190-7 18776-5";
        until(
            &c,
            &format!("{LISTED} === '{moved}';"),
            "Medications is first in the list",
        )
        .await;
        assert_eq!(
            script(
                &c,
                "var up = document.querySelector(\"button[aria-label='Move up: Medications']\"); \
                 return [up.hidden, document.activeElement.getAttribute('aria-label'), \
                 document.getElementById('cda-order-status').textContent, location.search];"
            )
            .await,
            serde_json::json!([
                true,
                "Move down: Medications",
                "Medications moved up: 1 of 8.",
                ""
            ]),
            "at the top: no Move up, the focus on Move down, the move said; no reload"
        );
        let saved: Vec<&str> = moved.split(' ').collect();
        assert_eq!(
            script(&c, "return localStorage.getItem('directmail.cda.order');").await,
            serde_json::to_string(&saved).unwrap()
        );
        until(
            &c,
            "return document.getElementById('cda-frame').src\
             .indexOf('frame?order=10160-0&order=42349-1&order=11450-4&') > 0;",
            "the frame is asked for in the new order",
        )
        .await;
        until_in_frame(
            &c,
            &frame_starts_with("Medications|Reason for Referral|Problems"),
            "the frame shows Medications first",
        )
        .await;
        assert_eq!(axe_problems(&c).await, Vec::<String>::new(), "after a move");

        // another document, without a Reason for Referral: Medications comes first
        let second = format!("/mail/messages/{id}/attachments/1/cda");
        c.goto(&app.url(&second)).await.unwrap();
        until(
            &c,
            &format!("{LISTED}.indexOf('10160-0 11450-4 48765-2 ') === 0;"),
            "the other document lists Medications first",
        )
        .await;
        until_in_frame(
            &c,
            &frame_starts_with("Medications|Problems|Allergies"),
            "the other document's frame shows Medications first",
        )
        .await;
        assert_eq!(
            axe_problems(&c).await,
            Vec::<String>::new(),
            "second viewer"
        );

        // a move here keeps the place of the section this document lacks
        press(&c, "Move up: Allergies").await;
        until(
            &c,
            &format!("{LISTED}.indexOf('10160-0 48765-2 11450-4 ') === 0;"),
            "Allergies moves up",
        )
        .await;
        assert_eq!(
            script(&c, "return localStorage.getItem('directmail.cda.order');").await,
            r#"["10160-0","42349-1","48765-2","11450-4","30954-2","29762-2","10190-7","18776-5"]"#
        );

        // "Reset order": forgotten, and the page is back in the preferred order
        c.find(Locator::Css("#cda-reset-order"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(
            &c,
            &format!(
                "return localStorage.getItem('directmail.cda.order') === null \
                 && {} === '11450-4 10160-0 48765-2 30954-2 29762-2 10190-7 18776-5';",
                LISTED.trim_start_matches("return ")
            ),
            "the preferred order again",
        )
        .await;
        until_in_frame(
            &c,
            &frame_starts_with("Problems|Medications|Allergies"),
            "the frame in the preferred order",
        )
        .await;
        c.goto(&app.url(&first)).await.unwrap();
        until(
            &c,
            &format!(
                "return document.getElementById('cda-apply').hidden \
                 && {} === '42349-1 11450-4 10160-0 48765-2 30954-2 29762-2 10190-7 18776-5';",
                LISTED.trim_start_matches("return ")
            ),
            "the first document in the preferred order",
        )
        .await;
        c.close().await.unwrap();
    }
}
