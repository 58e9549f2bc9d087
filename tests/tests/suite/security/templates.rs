//! Registry data in a proxy's configuration: a metadata value written to
//! end the directive and add its own stays one quoted argument through the
//! `nginx` and `haproxy` filters, checked by the real nginx and HAProxy; an
//! id with `@` is a valid HAProxy server name through `server_name`.

use std::process::Command;

use switchyard_tests::TestRegistry;
use switchyard_tests::process::explain;

use crate::proxy::template_command;

const HOSTILE: &str = "1\"; return 302 http://127.0.0.1:1/; add_header X-Leak \"$http_cookie";

const NGINX: &str = r#"pid {{ env("PREFIX") }}/nginx.pid;
error_log {{ env("PREFIX") }}/error.log;
events {}
http {
    access_log off;
    server {
        listen 127.0.0.1:1;
{% for name, service in services|items %}{% for i in service.instances %}
        location = /{{ name }}/{{ i.server_name }} {
            add_header X-Version {{ i.metadata.version|nginx }};
            return 204;
        }
{% endfor %}{% endfor %}
    }
}
"#;

const HAPROXY: &str = r#"defaults
    mode http
    timeout connect 1s
    timeout client 1s
    timeout server 1s
frontend edge
    bind 127.0.0.1:1
    default_backend web
{% for name, service in services|items %}
backend {{ name }}
{% for i in service.instances %}
    http-response set-header X-Version {{ i.metadata.version|haproxy }}
    server {{ i.server_name }} {{ i.target }}
{% endfor %}
{% endfor %}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_metadata_stays_one_argument_in_nginx_and_haproxy() {
    let registry = TestRegistry::start().await;
    let mut hostile = switchyard_tests::instance("web", "w@1", 8080, None);
    hostile.metadata.insert("version".into(), HOSTILE.into());
    registry
        .client()
        .register(&hostile, None)
        .await
        .expect("register");
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().to_str().expect("utf-8");
    for (name, source, check) in [
        ("nginx.conf", NGINX, vec!["nginx", "-t", "-p", prefix, "-c"]),
        ("haproxy.cfg", HAPROXY, vec!["haproxy", "-c", "-f"]),
    ] {
        let template = dir.path().join(format!("{name}.j2"));
        let out = dir.path().join(name);
        std::fs::write(&template, source).expect("template");
        let rendered = template_command(&registry.url(), &template, &out, &["--once"])
            .env("PREFIX", prefix)
            .output()
            .expect("cdctl template");
        assert!(rendered.status.success(), "{}", explain(&rendered));
        let text = std::fs::read_to_string(&out).expect("rendered");
        assert_eq!(
            text.matches("X-Leak").count(),
            1,
            "{name}: the value is there once, inside its quotes:\n{text}"
        );
        // nginx would expand `$http_cookie`: the filter leaves `$` out;
        // HAProxy reads `\$` as a dollar sign.
        let unescaped_dollar = text
            .char_indices()
            .any(|(at, c)| c == '$' && !text[..at].ends_with('\\'));
        assert!(!unescaped_dollar, "{name}: no variable:\n{text}");
        let checked = Command::new(check[0])
            .args(&check[1..])
            .arg(&out)
            .output()
            .expect("the proxy's own check");
        assert!(
            checked.status.success(),
            "{name}:\n{text}\n{}",
            explain(&checked)
        );
        if name == "nginx.conf" {
            let returns = text
                .lines()
                .filter(|line| line.trim_start().starts_with("return "))
                .count();
            assert_eq!(returns, 1, "only the template's own return:\n{text}");
        }
    }
}
