//! Reading mail in the browser: folders, the trust verdict in words, delivery status
//! of sent messages, attachments, and nobody else's mailbox.

use std::time::{Duration, Instant};

use directmail::outbound::{Attachment, Draft};
use directmail::store::inbound;
use reqwest::StatusCode;

use crate::helpers::TestApp;

#[tokio::test]
async fn a_received_message_is_read_in_the_browser_with_its_trust_in_words() {
    let app = TestApp::spawn().await;
    let (ana_box, kim_box) = app.lakeside_and_hillside().await;
    let draft = Draft {
        to: vec!["front@direct.hillside.test".into()],
        subject: "Referral for <Ms. Diaz>".into(),
        text: "Please see <b>her</b> this week.".into(),
        attachments: vec![Attachment {
            name: "summary.pdf".into(),
            content_type: "application/pdf".into(),
            data: b"%PDF-1.4 test".to_vec(),
        }],
        ..Default::default()
    };
    directmail::outbound::submit_draft(&app.state.db, &ana_box, "Dr. Ana Ruiz", &draft, app.now())
        .await
        .unwrap();
    app.state.wake_sender.notify_one();
    let deadline = Instant::now() + Duration::from_secs(120);
    while inbound::messages_in(&app.state.db, kim_box.id, "inbox", 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut kim = app.signed_in("kim@direct.hillside.test").await;
    assert!(
        kim.get("/")
            .await
            .body
            .contains(&format!("/mail/{}/inbox", kim_box.id))
    );
    let list = kim.get(&format!("/mail/{}/inbox", kim_box.id)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(
        list.body.contains("Referral for &#60;Ms. Diaz&#62;")
            || list.body.contains("Referral for &lt;Ms. Diaz&gt;")
    );
    assert!(
        list.body
            .contains("1<span class=\"visually-hidden\"> unread</span>")
            && list.body.contains("Trusted")
    );
    let id = inbound::messages_in(&app.state.db, kim_box.id, "inbox", 10)
        .await
        .unwrap()[0]
        .id;
    let page = kim.get(&format!("/mail/messages/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    // one line: who signed (the certificate's names, then the address), then the
    // anchor; the development CA is named as what it is
    let text = crate::webmail::unescape(&page.body);
    assert!(
        text.contains("Test certificate \u{2014} not for real patient data.")
            && text.contains("Signed by ")
            && text.contains(", trusted through directmail development CA."),
        "{text}"
    );
    let line = text
        .split("</strong>")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .unwrap_or_default();
    assert_eq!(
        line.trim(),
        "Signed by direct.lakeside.test (dr.ana@direct.lakeside.test), trusted through directmail development CA.",
        "each name once"
    );
    assert!(page.body.contains("dr.ana@direct.lakeside.test"));
    assert!(
        !page.body.contains("<b>her</b>"),
        "the sender's markup is shown as text"
    );
    assert!(page.body.contains("summary.pdf"));
    assert!(
        !kim.get(&format!("/mail/{}/inbox", kim_box.id))
            .await
            .body
            .contains("> unread</span>"),
        "read now"
    );
    let file = kim
        .client
        .get(app.url(&format!("/mail/messages/{id}/attachments/0")))
        .send()
        .await
        .unwrap();
    assert!(
        file.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(
        file.bytes().await.unwrap().to_vec(),
        b"%PDF-1.4 test".to_vec()
    );

    // nobody else reads it, by any URL
    let mut ana = app.signed_in("ana@direct.lakeside.test").await;
    assert_eq!(
        ana.get(&format!("/mail/messages/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ana.get(&format!("/mail/messages/{id}/attachments/0"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ana.get(&format!("/mail/{}/inbox", kim_box.id)).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ana.get(&format!("/mail/{}/junk", ana_box.id)).await.status,
        StatusCode::NOT_FOUND
    );
    // the sender follows delivery on the Sent copy
    let sent = inbound::messages_in(&app.state.db, ana_box.id, "sent", 10)
        .await
        .unwrap()[0]
        .id;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let page = ana.get(&format!("/mail/messages/{sent}")).await;
        if page.body.contains("<strong>delivered</strong>") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries = directmail::audit::list(&app.state.db, &Default::default(), 100)
        .await
        .unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.action == "message.read" && e.actor == "kim@direct.hillside.test")
    );
    assert!(entries.iter().any(|e| e.action == "attachment.download"));
}
