//! The dashboard (`--ui`) in headless Chromium: it lists what `cdctl`
//! says, follows a flip without reloading, escapes what clients wrote,
//! shows buttons only to deployers, refuses forged forms, rolls back and
//! promotes a paused deploy through the real `cdctl`, and pages through
//! 1,000 services.

use std::net::SocketAddr;
use std::time::Instant;

use fantoccini::Locator;
use futures::StreamExt;
use switchyard_client::RegistryClient;
use switchyard_model::{Color, ColorConnections, Deployment, Outcome, ProxyStatus};
use switchyard_tests::browser::{Browser, http};
use switchyard_tests::process::{cdctl_async, explain};
use switchyard_tests::{TestRegistry, eventually, free_port, instance, patience};

mod deploys;

/// A registry with `--auth` and the dashboard on a free port.
pub(crate) struct Dashboard {
    pub registry: TestRegistry,
    pub admin: RegistryClient,
    pub admin_token: String,
    pub ui: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Dashboard {
    pub async fn start(auth: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("admin.token");
        let ui = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let registry = TestRegistry::start_with(|config| {
            config.auth = auth;
            config.bootstrap_token_file = auth.then(|| file.clone());
            config.metrics_listen = Some(ui);
            config.ui = cd_registry::ui::UiMode::On;
        })
        .await;
        let admin_token = if auth {
            let text = std::fs::read_to_string(&file).expect("the bootstrap token");
            text.trim().to_string()
        } else {
            String::new()
        };
        let admin = crate::auth::client(&registry, &admin_token);
        Dashboard {
            registry,
            admin,
            admin_token,
            ui,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ui)
    }

    pub async fn token(&self, role: &str) -> String {
        crate::auth::token(&self.admin, role, None, &[]).await
    }

    /// Signs `browser` in with `token` through the login form.
    pub async fn sign_in(&self, browser: &Browser, token: &str) {
        let client = &browser.client;
        client
            .goto(&self.url("/ui/login"))
            .await
            .expect("login page");
        let field = client
            .find(Locator::Css("input[name=token]"))
            .await
            .expect("token field");
        field.send_keys(token).await.expect("typing the token");
        client
            .find(Locator::Css("#sign-in"))
            .await
            .expect("sign-in button")
            .click()
            .await
            .expect("signing in");
        eventually(patience(), || async {
            browser.text("#signed-in").await.map(|_| ())
        })
        .await;
    }

    /// The live color the registry has for `service`.
    pub async fn live(&self, service: &str) -> Option<Color> {
        let (_, found) = self.admin.get_service(service).await.expect("get service");
        found.active_color
    }
}

/// The CSRF token on the page `browser` shows.
pub(crate) async fn csrf(browser: &Browser) -> String {
    let value = browser
        .client
        .execute(
            "return document.querySelector('input[name=csrf]').value",
            vec![],
        )
        .await
        .expect("reading the CSRF token");
    value.as_str().unwrap_or_default().to_string()
}

/// The page's session cookie, as a `Cookie` header value.
async fn session_cookie(browser: &Browser) -> String {
    let cookie = browser
        .client
        .get_named_cookie("switchyard_session")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true), "scripts cannot read it");
    format!("switchyard_session={}", cookie.value())
}

/// Presses `button` on the page and accepts its confirmation; answers
/// what the page then says.
pub(crate) async fn press(browser: &Browser, button: &str) -> String {
    let client = &browser.client;
    client
        .find(Locator::Css(button))
        .await
        .unwrap_or_else(|error| panic!("{button}: {error}"))
        .click()
        .await
        .expect("pressing the button");
    eventually(patience(), || async {
        client.accept_alert().await.map_err(|e| e.to_string())
    })
    .await;
    eventually(patience(), || async {
        let said = browser.text("#action-result").await?;
        if said.is_empty() {
            Err("no answer yet".into())
        } else {
            Ok(said)
        }
    })
    .await
}

/// Sets a marker a reload would wipe out.
pub(crate) async fn mark(browser: &Browser) {
    browser
        .client
        .execute("window.switchyardMarker = 42; return true", vec![])
        .await
        .expect("setting the marker");
}

pub(crate) async fn still_marked(browser: &Browser) -> bool {
    let value = browser
        .client
        .execute("return window.switchyardMarker === 42", vec![])
        .await
        .expect("reading the marker");
    value.as_bool() == Some(true)
}

/// Registers `web` (two blue, one green) and `api` (one blue), both live on blue.
async fn two_services(d: &Dashboard) {
    let admin = &d.admin;
    for (service, id, port, color) in [
        ("web", "web-1", 8001, Color::Blue),
        ("web", "web-2", 8002, Color::Blue),
        ("web", "web-3", 8003, Color::Green),
        ("api", "api-1", 8101, Color::Blue),
    ] {
        let mut one = instance(service, id, port, Some(color));
        one.node = "node-a".into();
        admin.register(&one, None).await.expect("register");
    }
    for service in ["web", "api"] {
        admin
            .set_active_color(service, Some(Color::Blue), None, 0)
            .await
            .expect("flip");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_what_cdctl_says_and_follows_a_flip_without_reloading() {
    let d = Dashboard::start(true).await;
    two_services(&d).await;
    d.admin
        .set_canary_weight("web", (10, false), 0, Some(Color::Blue), 0)
        .await
        .expect("a canary");
    let promoted = Deployment {
        id: "api-1".into(),
        service: "api".into(),
        image: "api:1.4.2".into(),
        who: "ci@runner".into(),
        from_color: Some(Color::Green),
        to_color: Some(Color::Blue),
        started_at_ms: now_ms() - 95_000,
        ended_at_ms: now_ms() - 80_000,
        outcome: Outcome::Promoted,
        ..Deployment::default()
    };
    d.admin.record_deployment(&promoted).await.expect("record");
    let browser = Browser::start().await;
    let reader = d.token("reader").await;
    d.sign_in(&browser, &reader).await;
    eventually(patience(), || async {
        match browser.count("#services tbody tr[data-service]").await {
            2 => Ok(()),
            n => Err(format!("{n} rows")),
        }
    })
    .await;
    let as_admin = [("SWITCHYARD_TOKEN", d.admin_token.as_str())];
    let said = cdctl_async(&d.registry.url(), &["-o", "json", "services"], &as_admin).await;
    let listed: serde_json::Value = serde_json::from_slice(&said.stdout)
        .unwrap_or_else(|_| panic!("cdctl services: {}", explain(&said)));
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for service in listed {
        let name = service["service"].as_str().expect("a name");
        let row = format!("#services tr[data-service='{name}']");
        let live = browser.text(&format!("{row} .live-color")).await;
        assert_eq!(live.ok().as_deref(), service["active_color"].as_str());
        for field in ["instances", "passing"] {
            let shown = browser
                .client
                .find(Locator::Css(&row))
                .await
                .expect("the row")
                .attr(&format!("data-{field}"))
                .await
                .expect("an attribute");
            assert_eq!(shown, Some(service[field].to_string()), "{name} {field}");
        }
    }
    let weights = browser
        .text("#services tr[data-service='web'] .weights")
        .await;
    assert_eq!(weights.ok().as_deref(), Some("blue 90% · green 10%"));
    let last = browser.text("#services tr[data-service='api'] .last").await;
    assert!(last.is_ok_and(|l| l.starts_with("promoted")));
    browser.screenshot("services.png").await;

    mark(&browser).await;
    let sent = Instant::now();
    d.admin
        .set_active_color("web", Some(Color::Green), Some(Color::Blue), 0)
        .await
        .expect("flip");
    browser
        .until_text("#services tr[data-service='web'] .live-color", "green")
        .await;
    println!(
        "flip sent → the page shows it: {} ms",
        sent.elapsed().as_millis()
    );
    let mut another = instance("api", "api-2", 8102, Some(Color::Blue));
    another.node = "node-b".into();
    d.admin.register(&another, None).await.expect("register");
    browser
        .until_text("#services tr[data-service='api'] .instances", "blue 2/2")
        .await;
    assert!(still_marked(&browser).await, "the page was not reloaded");
    proxies_page(&d, &browser).await;
    browser.close().await;
}

/// A proxy's report shows on the proxies page: what it applied, how far
/// behind it is, and its requests in flight per color.
async fn proxies_page(d: &Dashboard, browser: &Browser) {
    let revision = d.admin.list_services().await.expect("services").0;
    let report = ProxyStatus {
        proxy_id: "edge-1".into(),
        applied_revision: revision,
        healthy: true,
        connections: vec![ColorConnections {
            service: "web".into(),
            color: Color::Green,
            connections: 3,
        }],
        ..ProxyStatus::default()
    };
    d.admin.report_proxy(&report).await.expect("report");
    let behind = ProxyStatus {
        proxy_id: "edge-2".into(),
        applied_revision: revision - 2,
        healthy: true,
        ..ProxyStatus::default()
    };
    d.admin.report_proxy(&behind).await.expect("report");
    browser
        .open(&d.url("/ui/proxies"), "tr[data-proxy='edge-2']")
        .await;
    let row = browser
        .text("tr[data-proxy='edge-1']")
        .await
        .unwrap_or_default();
    assert!(row.contains(&revision.to_string()), "{row}");
    assert!(
        row.contains("in step") && row.contains("web green=3"),
        "{row}"
    );
    let row = browser
        .text("tr[data-proxy='edge-2']")
        .await
        .unwrap_or_default();
    assert!(
        row.contains("2 revisions behind") && row.contains("not reported"),
        "{row}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_clients_wrote_renders_as_text() {
    let d = Dashboard::start(true).await;
    two_services(&d).await;
    let hostile = "<script>window.pwned=1</script><b id=evil>bold</b>";
    let mut one = instance("web", "web-9", 8009, Some(Color::Blue));
    one.metadata.insert("image".into(), hostile.into());
    one.tags = vec!["<i>tag</i>".into()];
    d.admin.register(&one, None).await.expect("register");
    let record = Deployment {
        id: "d-1".into(),
        service: "web".into(),
        image: hostile.into(),
        who: "<img src=x onerror=window.pwned=2>".into(),
        started_at_ms: now_ms() - 5_000,
        ended_at_ms: now_ms(),
        outcome: Outcome::Failed,
        failed_step: "pre-test".into(),
        error: "<a href='javascript:alert(1)'>x</a>".into(),
        ..Deployment::default()
    };
    d.admin.record_deployment(&record).await.expect("record");
    let browser = Browser::start().await;
    d.sign_in(&browser, &d.token("reader").await).await;
    browser
        .client
        .goto(&d.url("/ui/services/web"))
        .await
        .expect("service page");
    let shown = eventually(patience(), || async {
        browser.text("#history tr[data-deploy='d-1']").await
    })
    .await;
    assert!(shown.contains("<script>window.pwned=1</script>"), "{shown}");
    assert!(shown.contains("<img src=x"), "{shown}");
    let instance_row = browser.text("tr[data-instance='web-9']").await;
    assert!(
        instance_row.is_ok_and(|row| row.contains("<b id=evil>") && row.contains("<i>tag</i>"))
    );
    for css in [
        "main b#evil",
        "main img",
        "main script",
        "main i",
        "main a[href^=javascript]",
    ] {
        assert_eq!(browser.count(css).await, 0, "{css} became markup");
    }
    let pwned = browser
        .client
        .execute("return window.pwned === undefined", vec![])
        .await
        .expect("script");
    assert_eq!(pwned.as_bool(), Some(true), "no script ran");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_no_buttons_forged_forms_are_refused_and_a_deployer_rolls_back() {
    let d = Dashboard::start(true).await;
    two_services(&d).await;
    let (reader, deployer) = (d.token("reader").await, d.token("deployer").await);
    let browser = Browser::start().await;
    d.sign_in(&browser, &reader).await;
    browser
        .open(&d.url("/ui/services/web"), "#live-color")
        .await;
    assert_eq!(
        browser.count("#rollback").await,
        0,
        "a reader has no buttons"
    );
    assert_eq!(browser.count("form[action$='/rollback']").await, 0);
    let (reader_cookie, reader_csrf) = (session_cookie(&browser).await, csrf(&browser).await);

    d.sign_in(&browser, &deployer).await;
    browser.open(&d.url("/ui/services/web"), "#rollback").await;
    let (cookie, token) = (session_cookie(&browser).await, csrf(&browser).await);
    let post = "POST /ui/services/web/rollback HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded";
    for (what, head, body, status) in [
        ("no session", post.to_string(), format!("csrf={token}"), 401),
        (
            "no CSRF token",
            format!("{post}\r\nCookie: {cookie}"),
            String::new(),
            403,
        ),
        (
            "another session's CSRF token",
            format!("{post}\r\nCookie: {cookie}"),
            format!("csrf={reader_csrf}"),
            403,
        ),
        (
            "another origin",
            format!("{post}\r\nCookie: {cookie}\r\nOrigin: http://evil.example"),
            format!("csrf={token}"),
            403,
        ),
        (
            "a reader's own form",
            format!("{post}\r\nCookie: {reader_cookie}"),
            format!("csrf={reader_csrf}"),
            403,
        ),
    ] {
        let (got, answer) = http(d.ui, &head, &body).await;
        assert_eq!(got, status, "{what}: {answer}");
    }
    assert_eq!(
        d.live("web").await,
        Some(Color::Blue),
        "nothing forged went through"
    );

    mark(&browser).await;
    let said = press(&browser, "#rollback").await;
    assert!(said.contains("back on green"), "{said}");
    assert_eq!(d.live("web").await, Some(Color::Green));
    let history = d.admin.list_deployments("web", 1).await.expect("history");
    let principal = history[0]
        .metadata
        .get(switchyard_model::auth::PRINCIPAL_KEY);
    assert!(
        principal.is_some_and(|p| p.contains("test deployer")),
        "{history:?}"
    );
    browser.until_text("#live-color", "green").await;
    assert!(still_marked(&browser).await, "the page was not reloaded");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_services_are_paged_and_the_open_dashboard_is_read_only() {
    let d = Dashboard::start(false).await;
    let admin = d.admin.clone();
    futures::stream::iter(0..1000u16)
        .map(|n| {
            let admin = admin.clone();
            async move {
                let one = instance(&format!("svc-{n:04}"), &format!("i-{n:04}"), 9000 + n, None);
                admin.register(&one, None).await.expect("register");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let browser = Browser::start().await;
    let started = Instant::now();
    browser.client.goto(&d.url("/ui/")).await.expect("list");
    // Printed, not asserted: timings are no pass/fail here.
    let timing = browser
        .client
        .execute(
            "const n = performance.getEntriesByType('navigation')[0]; \
             const p = performance.getEntriesByType('paint').map(e => [e.name, e.startTime]); \
             return [n.responseEnd, n.domContentLoadedEventEnd, p]",
            vec![],
        )
        .await
        .expect("navigation timing");
    println!(
        "1,000 services, page 1: [response end, DOM ready, paints] = {timing} ms after \
         navigation start; goto returned after {} ms",
        started.elapsed().as_millis()
    );
    eventually(patience(), || async {
        match browser.text("#services tbody tr:first-child").await {
            Ok(row) if row.contains("svc-0000") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(browser.count("#services tbody tr[data-service]").await, 100);
    let pages = browser.text(".pages span").await;
    assert_eq!(pages.ok().as_deref(), Some("page 1 of 10"));
    browser
        .client
        .find(Locator::Css("a[rel=next]"))
        .await
        .expect("next")
        .click()
        .await
        .expect("click");
    eventually(patience(), || async {
        match browser.text("#services tbody tr:first-child").await {
            Ok(row) if row.contains("svc-0100") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    browser
        .client
        .goto(&d.url("/ui/?q=svc-0999"))
        .await
        .expect("filter");
    assert_eq!(browser.count("#services tbody tr[data-service]").await, 1);
    let who = browser.text("header .who").await;
    assert_eq!(who.ok().as_deref(), Some("read-only"));
    let head = "POST /ui/services/svc-0001/rollback HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded";
    let (status, answer) = http(d.ui, head, "csrf=x").await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("read-only without --auth"), "{answer}");
    browser.close().await;
}

/// A record `in_progress` is a running deploy only while its lock is held:
/// without one it died, and the page says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_that_died_shows_as_interrupted() {
    let d = Dashboard::start(false).await;
    two_services(&d).await;
    let record = Deployment {
        id: "d-9".into(),
        service: "web".into(),
        image: "web:9".into(),
        who: "ci".into(),
        started_at_ms: now_ms() - 1_000,
        outcome: Outcome::InProgress,
        metadata: [("step".to_string(), "start containers".to_string())].into(),
        ..Deployment::default()
    };
    d.admin.record_deployment(&record).await.expect("record");
    let heading = |expected: &'static str| {
        let ui = d.ui;
        async move {
            let page = "GET /ui/services/web HTTP/1.1\r\nX-Switchyard-Fragment: 1";
            let (status, body) = http(ui, page, "").await;
            match (status, body.contains(expected)) {
                (200, true) => Ok(()),
                _ => Err(format!("{status}, not {expected}: {body}")),
            }
        }
    };
    eventually(patience(), || heading("<h2>Interrupted")).await;
    let grant = d
        .admin
        .acquire_lock("web", "a deploy", 30)
        .await
        .expect("lock");
    eventually(patience(), || heading("<h2>Deploying")).await;
    d.admin
        .release_lock("web", grant.token)
        .await
        .expect("release");
    eventually(patience(), || heading("<h2>Interrupted")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_off_serves_metrics_only() {
    let ui = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _registry = TestRegistry::start_with(|config| {
        config.metrics_listen = Some(ui);
        config.ui = cd_registry::ui::UiMode::Off;
    })
    .await;
    let (status, _) = http(ui, "GET /metrics HTTP/1.1", "").await;
    assert_eq!(status, 200);
    let (status, _) = http(ui, "GET /ui/ HTTP/1.1", "").await;
    assert_eq!(status, 404, "--ui off");
}
use switchyard_model::clock::now_ms;
