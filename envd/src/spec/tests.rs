use super::*;

fn facts() -> Facts {
    Facts {
        env_id: "0190".into(),
        env_name: "t".into(),
        node_ip: "10.213.0.2".into(),
    }
}

fn render(src: &str, answers: &[(&str, &str)]) -> Result<Plan> {
    let answers = answers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Plan::render("t.yaml", src, &answers, &facts())
}

fn err(src: &str) -> String {
    render(src, &[]).unwrap_err().to_string()
}

#[test]
fn builtin_templates_render() {
    for name in ["full", "minimal"] {
        let t = crate::catalog::Catalog::new(None).get(name).unwrap();
        let plan = Plan::render(&t.origin, &t.text, &BTreeMap::new(), &facts()).unwrap();
        assert_eq!(plan.name, name);
    }
}

#[test]
fn answers_override_defaults_and_facts_are_rendered() {
    let t = crate::catalog::Catalog::new(None).get("minimal").unwrap();
    let answers = [("redis_password".to_string(), "s3cret".to_string())].into();
    let plan = Plan::render(&t.origin, &t.text, &answers, &facts()).unwrap();
    let redis = plan.pod("redis").unwrap();
    assert_eq!(redis.containers[0].env["REDIS_PASSWORD"], "s3cret");
    assert_eq!(
        redis.endpoint.as_ref().unwrap().url,
        "redis://:s3cret@10.213.0.2:6379/0"
    );
}

#[test]
fn other_pods_names_and_ports_are_facts() {
    let src = "name: a\nversion: '1'\npods:\n  - {name: order-db, ports: [3306], containers: [{name: c, image: i}]}\n  - {name: app, containers: [{name: c, image: i, env: {DB: '{{ pods.order_db.host }}:{{ pods.order_db.port }}', ALL: '{{ pods[\"order-db\"].ports | join(\",\") }}'}}]}\n";
    let plan = render(src, &[]).unwrap();
    let env = &plan.pod("app").unwrap().containers[0].env;
    assert_eq!(env["DB"], "order-db:3306");
    assert_eq!(env["ALL"], "3306");
    assert!(err(&src.replace("order_db.port", "nope.port")).contains("pods[1]"));
}

#[test]
fn an_undeclared_answer_names_the_declared_ones() {
    let t = crate::catalog::Catalog::new(None).get("minimal").unwrap();
    let answers = [("redis_pass".to_string(), "x".to_string())].into();
    let e = Plan::render(&t.origin, &t.text, &answers, &facts())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("answers.redis_pass") && e.contains("redis_password"),
        "{e}"
    );
}

#[test]
fn a_required_variable_must_be_answered_and_an_optional_one_renders_empty() {
    let src = "name: a\nversion: '1'\nvariables: [{variable: pw, required: true}]\npods: [{name: p, containers: [{name: c, image: i, env: {X: '{{ pw }}'}}]}]\n";
    assert!(err(src).contains("answers.pw"));
    assert_eq!(
        render(src, &[("pw", "1")]).unwrap().pods[0].containers[0].env["X"],
        "1"
    );
    let optional = src.replace(", required: true", "");
    assert_eq!(
        render(&optional, &[]).unwrap().pods[0].containers[0].env["X"],
        ""
    );
}

#[test]
fn unknown_fields_and_wrong_types_name_the_path() {
    let e = err("name: a\nversion: '1'\npods: [{name: p, containers: [{name: c, imag: i}]}]\n");
    assert!(
        e.contains("pods[0].containers[0]") && e.contains("imag"),
        "{e}"
    );
    let e = err(
        "name: a\nversion: '1'\npods: [{name: p, ports: [x], containers: [{name: c, image: i}]}]\n",
    );
    assert!(e.contains("pods[0].ports[0]"), "{e}");
}

#[test]
fn a_port_used_by_two_pods_is_refused() {
    let e = err(
        "name: a\nversion: '1'\npods:\n - {name: p, ports: [80], containers: [{name: c, image: i}]}\n - {name: q, ports: [80], containers: [{name: c, image: i}]}\n",
    );
    assert!(
        e.contains("pods[1].ports") && e.contains("`p` and `q`"),
        "{e}"
    );
}

#[test]
fn undefined_template_variables_are_errors_with_the_field() {
    let e = err(
        "name: a\nversion: '1'\npods: [{name: p, containers: [{name: c, image: '{{ nope }}'}]}]\n",
    );
    assert!(e.contains("pods[0].containers[0].image"), "{e}");
}

#[test]
fn bad_names_checks_and_endpoints_are_refused() {
    assert!(
        err("name: a\nversion: '1'\npods: [{name: P_1, containers: [{name: c, image: i}]}]\n")
            .contains("pods[0].name")
    );
    assert!(
        err("name: a\nversion: '1'\npods: [{name: stubs, containers: [{name: c, image: i}]}]\n")
            .contains("sidecar")
    );
    assert!(err("name: a\nversion: '1'\npods: [{name: p, containers: [{name: c, image: i}], ready: {kind: tcp}}]\n").contains("ready.port"));
    assert!(err("name: a\nversion: '1'\npods: [{name: p, ports: [1], containers: [{name: c, image: i}], ready: {kind: tcp, port: 2}}]\n").contains("not in the pod's ports"));
    assert!(err("name: a\nversion: '1'\npods: [{name: p, containers: [{name: c, image: i}], ready: {kind: exec}}]\n").contains("ready.command"));
    assert!(err("name: a\nversion: '1'\npods: [{name: p, containers: [{name: c, image: i}], endpoint: {port: 5, url: u}}]\n").contains("endpoint.port"));
    assert!(err("name: a\nversion: '1'\npods: [{name: p, containers: [{name: c, image: i, memory: lots}]}]\n").contains("memory"));
    assert!(err("name: a\nversion: '1'\npods: [{name: p, containers: [{name: c, image: i, files: [{path: rel, content: x}]}]}]\n").contains("files[0].path"));
    assert!(err("name: a\nversion: '1'\npods: []\n").contains("at least one pod"));
    assert!(err("name: [\n").contains("line"));
}

#[test]
fn memory_sizes() {
    assert_eq!(parse_memory("512m"), Ok(512 << 20));
    assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
    assert_eq!(parse_memory("8388608"), Ok(8 << 20));
    assert!(parse_memory("1k").is_err());
    assert!(parse_memory("-1g").is_err());
}

#[test]
fn on_change_defaults_to_restart_and_takes_a_known_signal() {
    let pod = |extra: &str| {
        format!(
            "name: a\nversion: '1'\npods: [{{name: p, containers: [{{name: c, image: i}}]{extra}}}]\n"
        )
    };
    assert_eq!(
        render(&pod(""), &[]).unwrap().pods[0].on_change,
        crate::spec::OnChange::Restart
    );
    assert_eq!(
        render(&pod(", on_change: {signal: HUP}"), &[])
            .unwrap()
            .pods[0]
            .on_change,
        crate::spec::OnChange::Signal("HUP".into())
    );
    assert_eq!(
        render(&pod(", on_change: restart"), &[]).unwrap().pods[0].on_change,
        crate::spec::OnChange::Restart
    );
    let e = err(&pod(", on_change: {signal: KILL}"));
    assert!(
        e.contains("pods[0].on_change.signal") && e.contains("HUP"),
        "{e}"
    );
    let e = err(&pod(", on_change: reload"));
    assert!(e.contains("pods[0].on_change"), "{e}");
}
