use super::*;
use crate::spec::CheckKind;
use crate::spec::order::Condition;

fn fixture(rel: &str) -> Collected {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/compose")
        .join(rel);
    collect(&path).unwrap()
}

fn import(c: &Collected) -> (Plan, Output) {
    let images = ImageMap::default();
    let out = convert(&Input {
        name: "t",
        version: "1",
        compose: &c.compose,
        source: "docker-compose.yml",
        files: &c.files,
        vars: &c.env,
        images: &images,
    })
    .unwrap();
    let facts = Facts {
        env_id: "e".into(),
        env_name: "t".into(),
        node_ip: "10.213.9.9".into(),
    };
    let plan = Plan::render("t", &out.template, &BTreeMap::new(), &facts).unwrap();
    (plan, out)
}

fn has(notes: &[String], words: &[&str]) -> bool {
    notes.iter().any(|n| words.iter().all(|w| n.contains(w)))
}

#[test]
fn web_app_with_mysql_and_redis() {
    let c = fixture("shop/docker-compose.yml");
    assert!(
        c.files.contains_key("./app/server.py"),
        "{:?}",
        c.files.keys()
    );
    let (plan, out) = import(&c);
    let names: Vec<&str> = plan.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web", "shop-db", "cache"]);

    let web = plan.pod("web").unwrap();
    assert_eq!(web.ports, [8000]);
    assert_eq!(web.targets[&8000], 8080);
    assert_eq!(web.ready.as_ref().unwrap().kind, CheckKind::Tcp);
    assert_eq!(web.containers[0].command, ["python3", "/srv/app/server.py"]);
    assert_eq!(
        web.containers[0].env["REDIS_URL"],
        "redis://:cache-pw@cache:6379/0"
    );
    assert_eq!(web.containers[0].files[0].path, "/srv/app/server.py");
    assert_eq!(web.depends_on["shop-db"], Condition::Started);

    let db = plan.pod("shop-db").unwrap();
    assert_eq!(db.aliases, ["shop_db"]);
    assert_eq!(db.containers[0].image, "envd/mysql:latest");
    assert_eq!(db.ports, [3306], "published for the native check");
    let ready = db.ready.as_ref().unwrap();
    assert_eq!(
        (ready.kind, ready.password.as_deref()),
        (CheckKind::Mysql, Some("secret"))
    );
    assert_eq!(
        db.endpoint.as_ref().unwrap().url,
        "mysql://root:secret@10.213.9.9:3306/shop"
    );
    assert_eq!(
        db.containers[0].files[0].path,
        "/docker-entrypoint-initdb.d/init.sql"
    );
    let cache = plan.pod("cache").unwrap();
    assert_eq!(
        cache.ready.as_ref().unwrap().password.as_deref(),
        Some("cache-pw")
    );

    for words in [
        &["mysql:8", "envd/mysql:latest"][..],
        &["redis:7-alpine", "envd/redis:latest"],
        &["shop_db", "pod `shop-db`"],
        &["db-data", "/var/lib/mysql", "not kept"],
        &["web", "not mapped", "restart"],
        &["shop_db", "port 3306 published"],
    ] {
        assert!(
            has(&out.notes, words),
            "no note with {words:?}: {:#?}",
            out.notes
        );
    }
    assert!(
        out.template
            .starts_with("# Imported from docker-compose.yml")
    );
}

#[test]
fn service_with_mongo_and_dotenv() {
    let (plan, out) = import(&fixture("notes/compose.yaml"));
    let mongo = plan.pod("mongo").unwrap();
    assert_eq!(mongo.containers[0].image, "envd/mongo:latest");
    let r = mongo.ready.as_ref().unwrap();
    assert_eq!(
        (r.kind, r.user.as_deref(), r.password.as_deref()),
        (CheckKind::Mongo, Some("root"), Some("n0tes-pw"))
    );
    let api = plan.pod("notes-api").unwrap();
    assert_eq!(api.ports, [8081]);
    assert_eq!(api.targets[&8081], 8080);
    assert_eq!(api.containers[0].env["NOTES_DB"], "notes", "from env_file");
    assert!(api.containers[0].env["MONGO_URL"].contains("n0tes-pw@mongo:27017"));
    assert_eq!(api.containers[0].files[0].path, "/api/main.py");
    assert!(has(&out.notes, &["mongo:7", "envd/mongo:latest"]));
}

#[test]
fn healthchecks_and_depends_on_conditions() {
    let (plan, out) = import(&fixture("orders/docker-compose.yml"));
    let app = plan.pod("app").unwrap();
    assert_eq!(app.depends_on["orders-db"], Condition::Ready);
    assert_eq!(app.depends_on["redis"], Condition::Ready);
    assert_eq!(app.depends_on["migrate"], Condition::Completed);
    let r = app.ready.as_ref().unwrap();
    assert_eq!(r.kind, CheckKind::Exec);
    assert_eq!(r.command[..2], ["sh", "-c"]);
    assert!(r.command[2].contains("urllib.request.urlopen(\"http://localhost:8080/health\")"));
    assert_eq!(r.deadline, Some(std::time::Duration::from_secs(50)));

    let db = plan.pod("orders-db").unwrap();
    assert_eq!(db.ready.as_ref().unwrap().kind, CheckKind::Mysql);
    // envd/mysql reads MYSQL_*: the mariadb image's MARIADB_* are given as those too.
    assert_eq!(db.containers[0].env["MYSQL_ROOT_PASSWORD"], "orders-pw");
    assert!(has(
        &out.notes,
        &["orders_db", "healthcheck replaced", "mysql"]
    ));
    assert!(plan.pod("migrate").unwrap().ready.is_none());
    assert_eq!(
        plan.pod("migrate").unwrap().depends_on["orders-db"],
        Condition::Ready
    );
}

fn convert_text(compose: &str) -> Result<Output> {
    convert(&Input {
        name: "t",
        version: "1",
        compose,
        source: "c.yml",
        files: &BTreeMap::new(),
        vars: &BTreeMap::new(),
        images: &ImageMap::default(),
    })
}

#[test]
fn errors_name_the_service_and_field() {
    let e = convert_text("services:\n  web:\n    build: .\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("services.web.image") && e.contains("builds no images"),
        "{e}"
    );
    let e = convert_text("services:\n  web:\n    image: x\n    ports: {a: 1}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("services.web"), "{e}");
    let e = convert_text("volumes: {}\n").unwrap_err().to_string();
    assert!(e.contains("services") && e.contains("no services"), "{e}");
    let e = convert_text("services:\n  a:\n    image: \"${IMG:?set IMG}\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("set IMG"), "{e}");
}

#[test]
fn odd_names_ports_and_template_braces() {
    let out = convert_text(
        "services:\n  Stubs:\n    image: x\n    ports: [\"9000:9000\", \"53:53/udp\", 7000]\n    \
         command: [\"echo\", \"{{ not_a_var }}\"]\n  My_App:\n    image: y\n    links: [\"Stubs:legacy\"]\n",
    )
    .unwrap();
    let facts = Facts {
        env_id: "e".into(),
        env_name: "t".into(),
        node_ip: "10.213.9.9".into(),
    };
    let plan = Plan::render("t", &out.template, &BTreeMap::new(), &facts).unwrap();
    let s = &plan.pods[0];
    assert_eq!(s.name, "svc-stubs");
    assert_eq!(s.ports, [7000]);
    assert_eq!(s.containers[0].command[1], "{{ not_a_var }}");
    assert_eq!(s.aliases, ["legacy"], "`stubs` is the sidecar's name");
    assert_eq!(plan.pods[1].name, "my-app");
    assert!(
        has(&out.notes, &["9000", "stubs sidecar"]),
        "{:#?}",
        out.notes
    );
    assert!(
        has(&out.notes, &["53:53/udp", "not mapped"]),
        "{:#?}",
        out.notes
    );
}

#[test]
fn huge_healthcheck_durations_do_not_overflow() {
    let compose = "services:\n  web:\n    image: x\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 500000000000y\n      timeout: 500000000000y\n      retries: 4294967296\n      start_period: 500000000000y\n";
    let out = convert_text(compose).unwrap();
    assert!(out.template.contains("deadline"), "{}", out.template);
}

#[test]
fn bind_sources_outside_the_compose_dir_are_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("id_rsa"), "secret").unwrap();
    std::fs::write(dir.path().join("app.conf"), "ok").unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("home")).unwrap();
    let compose = format!(
        "services:\n  web:\n    image: x\n    volumes:\n      - ./app.conf:/etc/app.conf\n      - {o}:/root/.ssh\n      - ./home:/h\n      - ../:/up\n",
        o = outside.path().display()
    );
    std::fs::write(dir.path().join("docker-compose.yml"), compose).unwrap();
    let c = collect(&dir.path().join("docker-compose.yml")).unwrap();
    let keys: Vec<&String> = c.files.keys().collect();
    assert_eq!(keys, vec!["./app.conf"], "{:?}", c.skipped);
    assert!(c.files.values().all(|f| f.content != "secret"));
    assert!(
        c.skipped.iter().any(|s| s.contains("outside")),
        "{:?}",
        c.skipped
    );
}
