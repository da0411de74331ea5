use super::*;

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text, Some(Path::new("p.toml"))) {
        Ok(_) => panic!("accepted: {text}"),
        Err(ConfigError::Invalid(lines)) => lines,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn builtin_default_is_a_loopback_forward_proxy() {
    let c = Config::builtin();
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].bind.to_string(), "127.0.0.1:3128");
    assert_eq!(c.listeners[0].mode, Mode::Forward);
    assert_eq!(c.egress.connect_ports, vec![443]);
    assert!(!c.egress.allow_private_destinations);
    assert_eq!(c.log.access, AccessLogTarget::Stdout);
    assert_eq!(c.limits.max_header_size, 64 << 10);
}

#[test]
fn unknown_key_gets_did_you_mean_with_position() {
    let e = errors("[[listener]]\nbind = \"127.0.0.1:0\"\nmod = \"forward\"\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("p.toml:3:1: unknown key `mod` (did you mean `mode`?)"),
        "{e:?}"
    );
    let e = errors("[egres]\n");
    assert!(e[0].contains("did you mean `egress`"), "{e:?}");
}

#[test]
fn every_semantic_problem_is_reported() {
    let text = "workers = 0\n[[listener]]\nbind = \"nowhere\"\n[[listener]]\nbind = \"127.0.0.1:1\"\nmode = \"socks4\"\n[[listener]]\nbind = \"127.0.0.1:2\"\nmode = \"forwrd\"\n[timeouts]\nconnect = \"soon\"\n[[rule]]\naction = \"allow\"\nsrc = [\"10.0.0.0/40\"]\n";
    let e = errors(text);
    assert_eq!(e.len(), 6, "{e:#?}");
    assert!(e[0].starts_with("p.toml:1:11: `workers`"), "{e:?}");
    assert!(
        e[1].starts_with("p.toml:3:8: `nowhere` is not an address"),
        "{e:?}"
    );
    // Problems come in file order.
    assert!(
        e[2].starts_with("p.toml:6:8: unknown listener mode `socks4`"),
        "{e:?}"
    );
    assert!(e[3].contains("did you mean `forward`"), "{e:?}");
    assert!(e[4].starts_with("p.toml:11:11: timeout `connect`"), "{e:?}");
    assert!(e[5].starts_with("p.toml:14:8: prefix length"), "{e:?}");
}

#[test]
fn syntax_error_is_located() {
    let e = errors("[egress]\nallow_private_destinations = yes\n");
    assert!(e[0].starts_with("p.toml:2:"), "{e:?}");
}

#[test]
fn values_are_typed() {
    let c = Config::parse(
        "[[listener]]\nname = \"v6\"\nbind = \"[::1]:0\"\nmax_connections = 5\n[http]\nvia = false\n[limits]\nmax_header_size = \"32KiB\"\n[timeouts]\nconnect = \"500ms\"\n[egress]\nconnect_ports = [443, 8443]\n[log]\naccess = \"off\"\nformat = \"json\"\n",
        None,
    )
    .unwrap();
    assert_eq!(c.listeners[0].bind.to_string(), "[::1]:0");
    assert_eq!(c.listeners[0].max_connections, 5);
    assert_eq!(c.http.via, None);
    assert_eq!(c.limits.max_header_size, 32 << 10);
    assert_eq!(c.timeouts.connect, Duration::from_millis(500));
    assert_eq!(c.egress.connect_ports, vec![443, 8443]);
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn admin_login_file_is_checked_where_it_is_given() {
    let e = errors("[[listener]]\nbind = \"127.0.0.1:0\"\nadmin_htpasswd = \"a.htpasswd\"\n");
    assert!(
        e[0].starts_with("p.toml:3:18: `admin_htpasswd` applies to admin listeners"),
        "{e:?}"
    );
    let e = errors(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nmode = \"admin\"\nadmin_htpasswd = \"/nonexistent/a.htpasswd\"\n",
    );
    assert!(
        e[0].starts_with("p.toml:4:18: cannot read htpasswd file /nonexistent/a.htpasswd"),
        "{e:?}"
    );
}

#[test]
fn egress_hosts_are_names_with_addresses() {
    let c = Config::parse(
        "[egress]\nhosts = { \"Intranet.Example.\" = \"10.0.0.5\", \"two.test\" = [\"10.0.0.6\", \"::1\"] }\n",
        Some(Path::new("p.toml")),
    )
    .unwrap();
    assert_eq!(
        c.egress.hosts["intranet.example"],
        vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(c.egress.hosts["two.test"].len(), 2);
    let e =
        errors("[egress]\nhosts = { \"a.test\" = \"10.0.0.300\", \"bad name\" = \"10.0.0.1\" }\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter()
            .any(|l| l.contains("`10.0.0.300` (for `a.test`) is not an IP address")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|l| l.contains("`bad name` is not a host name")),
        "{e:?}"
    );
    assert!(e[0].starts_with("p.toml:2:9:"), "{e:?}");
}

/// Values written in one of several forms say which forms their key takes,
/// in the configuration's words, not serde's ("data did not match any
/// variant of untagged enum RawDuration").
#[test]
fn values_of_the_wrong_form_name_the_key_and_the_forms() {
    for (text, want) in [
        (
            "[timeouts]\ndrain = 1.5\n",
            "p.toml:2:9: `drain` must be a duration such as \"500ms\", \"30s\", \"5m\" or \"1h\", or a whole number of seconds (found floating point `1.5`)",
        ),
        (
            "[limits]\nmax_header_size = true\n",
            "p.toml:2:19: `max_header_size` must be a size such as \"64KiB\" or \"1MiB\", or a whole number of bytes (found boolean `true`)",
        ),
        (
            "[egress]\nhttp_ports = [80, 1.5]\n",
            "p.toml:2:19: `http_ports` must be a number such as 443, or a range such as \"8000-8999\" (found floating point `1.5`)",
        ),
        (
            "[[listener]]\nbind = \"127.0.0.1:0\"\nh2c = 1\n",
            "p.toml:3:7: `h2c` must be true, false or \"only\" (found integer `1`)",
        ),
        (
            "[http]\nvia = 5\n",
            "p.toml:2:7: `via` must be a pseudonym such as \"proxy-1\", true (the default one) or false (no Via) (found integer `5`)",
        ),
        (
            "[egress]\nhosts = { \"a.test\" = 1 }\n",
            "p.toml:2:22: `a.test` must be an IP address such as \"10.0.0.5\", or a list of them (found integer `1`)",
        ),
        (
            "[[pool]]\nname = \"a\"\nservers = [\"127.0.0.1:1\", 5]\n",
            "p.toml:3:27: `servers` must be a list of servers, each \"host:port\" or a table such as { addr = \"host:port\", weight = 2 } (found integer `5`)",
        ),
        (
            "workers = \"x\"\n",
            "p.toml:1:11: `workers` must be a whole number (found string \"x\")",
        ),
        (
            "[[listener]]\nbind = 5\n",
            "p.toml:2:8: `bind` must be a string (found integer `5`)",
        ),
    ] {
        assert_eq!(errors(text), [want], "{text}");
    }
}

/// A server table refuses unknown keys like every other table, with the
/// same hint, and says which key is missing.
#[test]
fn server_tables_refuse_unknown_keys_with_a_hint() {
    assert_eq!(
        errors("[[pool]]\nname = \"a\"\nservers = [{ addr = \"127.0.0.1:1\", wieght = 5 }]\n"),
        ["p.toml:3:36: unknown key `wieght` (did you mean `weight`?)"]
    );
    assert_eq!(
        errors("[[pool]]\nname = \"a\"\nservers = [{ weight = 5 }]\n"),
        ["p.toml:3:12: missing key `addr`"]
    );
    let c = Config::parse(
        "[[pool]]\nname = \"a\"\nservers = [\"127.0.0.1:1\", { addr = \"127.0.0.1:2\", weight = 5, backup = true, state = \"drain\" }]\n",
        None,
    )
    .unwrap();
    assert_eq!(c.pools[0].servers.len(), 2);
    assert_eq!(c.pools[0].servers[1].weight, 5);
}

#[test]
fn auth_takes_a_user_file_or_a_program() {
    let e = errors("[auth]\nrealm = \"x\"\n");
    assert!(
        e[0].starts_with("p.toml:1:1: [auth] needs `htpasswd` (a user file) or `program`"),
        "{e:?}"
    );
    let e = errors("[auth]\nhtpasswd = \"u\"\nprogram = [\"/bin/true\"]\n");
    assert!(
        e[0].starts_with("p.toml:2:12: [auth] takes `htpasswd` (a user file) or `program`"),
        "{e:?}"
    );
    let e = errors("[auth]\nprogram = []\n");
    assert!(
        e[0].starts_with("p.toml:2:11: `program` needs at least the program to run"),
        "{e:?}"
    );
    let e = errors("[auth]\nprogram = [\"/nonexistent/helper\", \"-v\"]\n");
    assert!(
        e[0].starts_with("p.toml:2:12: cannot run /nonexistent/helper"),
        "{e:?}"
    );
    let e = errors("[auth]\nprogram = [\"/etc/passwd\"]\n");
    assert!(e[0].ends_with("/etc/passwd is not executable"), "{e:?}");
    let e = errors("[auth]\nprogram = [\"/bin/true\"]\nchildren = 0\n");
    assert!(
        e[0].starts_with("p.toml:3:12: `children` must be between 1 and 1000"),
        "{e:?}"
    );
    let c = Config::parse(
        "[auth]\nprogram = [\"/bin/true\"]\nchildren = 2\nprogram_timeout = \"3s\"\n[[rule]]\naction = \"auth\"\n",
        Some(Path::new("p.toml")),
    )
    .unwrap();
    assert!(c.auth.as_ref().unwrap().program.is_some());
}

#[test]
fn custom_log_templates_are_checked() {
    let e = errors("[log]\nformat = \"custom\"\n");
    assert!(
        e[0].starts_with("p.toml:2:10: format = \"custom\" needs a `template`"),
        "{e:?}"
    );
    let e = errors("[log]\nformat = \"custom\"\ntemplate = \"$remote_adr $status\"\n");
    assert_eq!(
        e[0],
        "p.toml:3:12: log template: unknown variable `$remote_adr` (did you mean `$remote_addr`?)"
    );
    let e = errors("[log]\ntemplate = \"$status\"\n");
    assert!(
        e[0].starts_with("p.toml:2:12: `template` applies to format = \"custom\""),
        "{e:?}"
    );
    let c = Config::parse(
        "[log]\nformat = \"custom\"\ntemplate = \"$remote_addr $status\"\n",
        Some(Path::new("p.toml")),
    )
    .unwrap();
    assert!(matches!(c.log.format, LogFormat::Custom(_)));
}

#[test]
fn syslog_destinations_are_checked() {
    let e = errors("[log]\naccess = \"syslog:/nonexistent/log.sock\"\n");
    assert!(
        e[0].starts_with("p.toml:2:10: cannot reach syslog at /nonexistent/log.sock"),
        "{e:?}"
    );
    let e =
        errors("[log]\naccess = \"syslog:udp://logs.example:514\"\nsyslog_facility = \"local1\"\n");
    assert!(e[0].contains("needs an IP address and a port"), "{e:?}");
    assert_eq!(e.len(), 1, "{e:?}");
    let e =
        errors("[log]\naccess = \"syslog:udp://127.0.0.1:514\"\nsyslog_facility = \"local9\"\n");
    assert!(
        e[0].starts_with("p.toml:3:19: unknown syslog facility `local9` (did you mean `local0`?)"),
        "{e:?}"
    );
    let e = errors("[log]\nsyslog_facility = \"local1\"\n");
    assert!(e[0].contains("`syslog_facility` applies to"), "{e:?}");
    let c = Config::parse(
        "[log]\naccess = \"syslog:udp://127.0.0.1:514\"\nsyslog_facility = \"daemon\"\n",
        Some(Path::new("p.toml")),
    )
    .unwrap();
    assert!(matches!(c.log.access, AccessLogTarget::Syslog(ref t) if t.facility == 3));
}

#[test]
fn redirect_routes_are_checked() {
    let head = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n[[pool]]\nname = \"www\"\nservers = [\"127.0.0.1:8080\"]\n[[route]]\nlistener = \"web\"\n";
    let e = errors(head);
    assert!(e[0].contains("a route needs `pool`"), "{e:?}");
    let e = errors(&format!(
        "{head}pool = \"www\"\nredirect = \"https://x/\"\n"
    ));
    assert!(e[0].contains("not both"), "{e:?}");
    let e = errors(&format!("{head}redirect = \"https://$hots$request_uri\"\n"));
    assert!(
        e[0].contains("unknown variable `$hots` in `redirect` (did you mean `$host`?)"),
        "{e:?}"
    );
    let e = errors(&format!("{head}redirect = \"example.com/x\"\n"));
    assert!(e[0].contains("`redirect` is a URL"), "{e:?}");
    let e = errors(&format!(
        "{head}redirect = \"https://x$request_uri\"\nredirect_status = 200\n"
    ));
    assert!(
        e[0].starts_with("p.toml:11:19: `redirect_status` is one of"),
        "{e:?}"
    );
    let e = errors(&format!(
        "{head}redirect = \"https://x/\"\nresponse_set = {{ \"Strict-Transport-Security\" = \"max-age=1\" }}\n"
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("`response_set` does not apply to a route that redirects"),
        "{e:?}"
    );
    let e = errors(&format!("{head}pool = \"www\"\nredirect_status = 301\n"));
    assert!(
        e[0].contains("`redirect_status` applies to a route with `redirect`"),
        "{e:?}"
    );
}

#[test]
fn the_error_page_must_be_readable() {
    let e = errors("[http]\nerror_page = \"/nonexistent/error.html\"\n");
    assert!(
        e[0].starts_with("p.toml:2:14: cannot read the error page /nonexistent/error.html"),
        "{e:?}"
    );
}

#[test]
fn request_ids_take_a_field_of_their_own() {
    let head = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nmode = \"reverse\"\n";
    for field in [
        "Content-Length",
        "transfer_encoding",
        "Host",
        "Proxy-Authorization",
        "X-Forwarded-For",
        "X Id",
    ] {
        let e = errors(&format!("{head}request_id = \"{field}\"\n"));
        assert!(
            e[0].contains("`request_id` is a header field name of its own"),
            "{field}: {e:?}"
        );
    }
    let e = errors("[[listener]]\nbind = \"127.0.0.1:0\"\nrequest_id = \"X-Request-ID\"\n");
    assert!(e[0].contains("applies to reverse listeners"), "{e:?}");
}
