//! The dashboard's sign-in: the browser holds a session id, never the API
//! token; the login form needs its own CSRF token and this origin; signing
//! out ends the session in the registry, not only in the browser.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::dashboard::Dashboard;

/// The whole answer (head and body) to `head` with `headers` and `body`.
async fn ask(address: SocketAddr, head: &str, headers: &[String], body: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connecting to the dashboard");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "{head}\r\nHost: {address}\r\n{extra}Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The value cookie `name` is set to in `answer`.
fn set_cookie(answer: &str, name: &str) -> Option<String> {
    answer
        .lines()
        .filter_map(|line| line.strip_prefix("set-cookie: "))
        .filter_map(|cookie| cookie.split(';').next()?.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// The value of the hidden `csrf` input in a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().expect("its value").to_string()
}

fn form(token: &str, csrf: &str) -> String {
    format!("token={token}&csrf={csrf}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_needs_the_forms_csrf_token_and_the_cookie_is_a_session_not_the_token() {
    let d = Dashboard::start(true).await;
    let token = d.token("deployer").await;
    let page = ask(d.ui, "GET /ui/login HTTP/1.1", &[], "").await;
    let nonce = set_cookie(&page, "switchyard_login").expect("the login nonce cookie");
    let csrf = csrf_of(&page);
    let with_nonce = format!("Cookie: switchyard_login={nonce}");
    let post = "POST /ui/login HTTP/1.1";

    let refused = [
        ("no csrf", vec![with_nonce.clone()], form(&token, "")),
        ("no nonce cookie", vec![], form(&token, &csrf)),
        (
            "another form's csrf",
            vec!["Cookie: switchyard_login=00ff".to_string()],
            form(&token, &csrf),
        ),
        (
            "another origin",
            vec![with_nonce.clone(), "Origin: http://evil.example".into()],
            form(&token, &csrf),
        ),
    ];
    for (what, headers, body) in refused {
        let answer = ask(d.ui, post, &headers, &body).await;
        assert_eq!(status(&answer), 403, "{what}: {answer}");
        assert!(
            set_cookie(&answer, "switchyard_session").is_none(),
            "{what} signs nobody in"
        );
    }

    let signed = ask(
        d.ui,
        post,
        std::slice::from_ref(&with_nonce),
        &form(&token, &csrf),
    )
    .await;
    assert_eq!(status(&signed), 303, "{signed}");
    let session = set_cookie(&signed, "switchyard_session").expect("a session cookie");
    assert!(
        !session.contains(&token) && !token.contains(&session),
        "the cookie is not the token"
    );
    let as_session = format!("Cookie: switchyard_session={session}");
    let home = ask(
        d.ui,
        "GET /ui/ HTTP/1.1",
        std::slice::from_ref(&as_session),
        "",
    )
    .await;
    assert!(home.contains("id=\"signed-in\""), "{home}");

    // Signing out ends the session here: the same cookie, replayed, is
    // nobody.
    let logout_csrf = csrf_of(&home);
    let out = ask(
        d.ui,
        "POST /ui/logout HTTP/1.1",
        std::slice::from_ref(&as_session),
        &format!("csrf={logout_csrf}"),
    )
    .await;
    assert_eq!(status(&out), 303, "{out}");
    let replayed = ask(d.ui, "GET /ui/ HTTP/1.1", &[as_session], "").await;
    assert!(!replayed.contains("id=\"signed-in\""), "{replayed}");
}
