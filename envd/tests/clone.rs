//! Init data, clone --with-data and two services from one app image, on the real engine
//! (root, Docker, the images and the seed; under CI=true their absence fails).

use std::time::Duration;

use envd::catalog::Catalog;
use envd::error::Error;
use envd::service::{self, CloneRequest, Limits};
use envd::spec::init::InitFile;
use envd::store::{State, Store};
use mongodb::bson::{Document, doc};
use mysql_async::prelude::Queryable;

mod common;
use common::harness::{harness, harness_with, request, template_dir};

fn init_file(name: &str, content: &str) -> Vec<InitFile> {
    vec![InitFile {
        name: name.into(),
        content: content.into(),
    }]
}

async fn mysql(ip: &str) -> mysql_async::Conn {
    mysql_async::Conn::from_url(format!("mysql://root:envd-root@{ip}:3306/test"))
        .await
        .unwrap()
}

async fn mongo(ip: &str) -> mongodb::Client {
    let uri =
        format!("mongodb://root:envd-root@{ip}:27017/?authSource=admin&directConnection=true");
    mongodb::Client::with_uri_str(&uri).await.unwrap()
}

async fn redis_db(ip: &str, db: u8) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://:envd-redis@{ip}:6379/{db}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// What the test compares between source and clone: rows, documents, indexes and keys.
#[derive(Debug, PartialEq)]
struct Data {
    orders: Vec<(i64, String)>,
    shop_items: Vec<String>,
    mongo_orders: Vec<String>,
    mongo_carts: usize,
    cart_indexes: Vec<String>,
    greeting: Option<String>,
    jobs: Vec<String>,
    session_has_ttl: bool,
}

async fn read(ip: &str) -> Data {
    let mut c = mysql(ip).await;
    let orders = c
        .query("SELECT id, item FROM orders ORDER BY id")
        .await
        .unwrap();
    // Absent until the test creates it.
    let shop_items = c
        .query("SELECT name FROM shop.items ORDER BY name")
        .await
        .unwrap_or_default();
    c.disconnect().await.unwrap();
    let m = mongo(ip).await;
    let coll = m.database("test").collection::<Document>("orders");
    let mut mongo_orders = vec![];
    let mut cur = coll.find(doc! {}).sort(doc! { "n": 1 }).await.unwrap();
    while cur.advance().await.unwrap() {
        mongo_orders.push(
            cur.deserialize_current()
                .unwrap()
                .get_str("item")
                .unwrap()
                .to_string(),
        );
    }
    let carts = m.database("shop").collection::<Document>("carts");
    let mongo_carts = carts.count_documents(doc! {}).await.unwrap() as usize;
    let mut cart_indexes = carts.list_index_names().await.unwrap_or_default();
    cart_indexes.sort();
    let mut r0 = redis_db(ip, 0).await;
    let mut r3 = redis_db(ip, 3).await;
    let greeting: Option<String> = redis::cmd("GET")
        .arg("greeting")
        .query_async(&mut r0)
        .await
        .unwrap();
    let jobs: Vec<String> = redis::cmd("LRANGE")
        .arg("jobs")
        .arg(0)
        .arg(-1)
        .query_async(&mut r0)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("session")
        .query_async(&mut r3)
        .await
        .unwrap();
    Data {
        orders,
        shop_items,
        mongo_orders,
        mongo_carts,
        cart_indexes,
        greeting,
        jobs,
        session_has_ttl: ttl > 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn init_data_is_there_at_ready_and_a_clone_with_data_holds_the_same() {
    let Some(h) = harness(241, None).await else {
        return;
    };
    let mut req = request("full", &[]);
    req.init.insert(
        "mysql".into(),
        init_file(
            "01-orders.sql",
            "CREATE TABLE orders (id INT PRIMARY KEY, item TEXT);\nINSERT INTO orders VALUES (1, 'book'), (2, 'pen'), (3, 'ink');\n",
        ),
    );
    req.init.insert(
        "mongo".into(),
        init_file(
            "orders.json",
            "{\"n\": 1, \"item\": \"lamp\"}\n{\"n\": 2, \"item\": \"desk\"}\n",
        ),
    );
    req.init.insert(
        "redis".into(),
        init_file(
            "seed.redis",
            "SET greeting \"hello there\"\nRPUSH jobs a b\n",
        ),
    );
    let (src, guard) = h.ready_with(req).await;
    let ip = src.node_ip.clone().unwrap();

    // Init data is there the moment the env is ready.
    let at_ready = read(&ip).await;
    assert_eq!(
        at_ready.orders,
        vec![(1, "book".into()), (2, "pen".into()), (3, "ink".into())]
    );
    assert_eq!(at_ready.mongo_orders, vec!["lamp", "desk"]);
    assert_eq!(at_ready.greeting.as_deref(), Some("hello there"));
    assert_eq!(at_ready.jobs, vec!["a", "b"]);

    // Data written since: another row and database, a document and an index elsewhere,
    // a key with a TTL in another Redis database.
    let mut c = mysql(&ip).await;
    for q in [
        "INSERT INTO orders VALUES (4, 'clip')",
        "CREATE DATABASE shop",
        "CREATE TABLE shop.items (name VARCHAR(20) PRIMARY KEY)",
        "INSERT INTO shop.items VALUES ('a'), ('b')",
    ] {
        c.query_drop(q).await.unwrap();
    }
    c.disconnect().await.unwrap();
    let m = mongo(&ip).await;
    let carts = m.database("shop").collection::<Document>("carts");
    carts
        .insert_many(vec![doc! { "user": "ada" }, doc! { "user": "bob" }])
        .await
        .unwrap();
    carts
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "user": 1 })
                .build(),
        )
        .await
        .unwrap();
    let mut r3 = redis_db(&ip, 3).await;
    let _: () = redis::cmd("SET")
        .arg("session")
        .arg("s1")
        .arg("EX")
        .arg(3600)
        .query_async(&mut r3)
        .await
        .unwrap();
    let before = read(&ip).await;
    assert_eq!(before.orders.len(), 4);
    assert_eq!(before.mongo_carts, 2);
    assert!(before.session_has_ttl);

    let clone = service::clone(
        &h.engine.store,
        &Limits::default(),
        &src.name,
        CloneRequest {
            with_data: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    guard.watch(&clone.id);
    h.engine.kick(&clone.id);
    let clone = h.until_ready(&clone).await;
    assert_eq!(clone.clone_of.as_deref(), Some(src.id.as_str()));
    let cip = clone.node_ip.clone().unwrap();
    assert_ne!(cip, ip);

    // The clone holds the same rows, documents, indexes and keys; the source is unchanged.
    assert_eq!(read(&cip).await, before);
    assert_eq!(read(&ip).await, before);
    let events = h.engine.store.events(&clone.id, 0).await.unwrap();
    for step in [
        "clone",
        "copy-data:mysql",
        "copy-data:mongo",
        "copy-data:redis",
        "copy-data",
    ] {
        assert!(
            events.iter().any(|e| e.step == step),
            "no {step} event: {events:?}"
        );
    }
    for e in events.iter().filter(|e| e.step.starts_with("copy-data")) {
        eprintln!(
            "{} {} ms: {}",
            e.step,
            e.duration_ms.unwrap_or(-1),
            e.message
        );
    }

    // The two are independent: a write to the clone is not in the source.
    let mut c = mysql(&cip).await;
    c.query_drop("DELETE FROM orders").await.unwrap();
    c.disconnect().await.unwrap();
    assert_eq!(read(&ip).await.orders.len(), 4);

    // A clone without data starts from the template and the init files only.
    let bare = service::clone(
        &h.engine.store,
        &Limits::default(),
        &src.id,
        CloneRequest::default(),
    )
    .await
    .unwrap();
    guard.watch(&bare.id);
    h.engine.kick(&bare.id);
    let bare = h.until_ready(&bare).await;
    let fresh = read(bare.node_ip.as_deref().unwrap()).await;
    assert_eq!(fresh.orders, at_ready.orders);
    assert_eq!((fresh.mongo_carts, fresh.shop_items.len()), (0, 0));

    for env in [&clone, &bare, &src] {
        assert_eq!(h.teardown(&env.id).await.state, State::Gone);
        h.assert_nothing_left(env).await;
    }
    // Only a ready env can be cloned.
    let gone = service::clone(
        &h.engine.store,
        &Limits::default(),
        &src.id,
        CloneRequest::default(),
    )
    .await;
    assert!(matches!(gone, Err(Error::Conflict(_))), "{gone:?}");
}

const APP_TEMPLATE: &str = r#"
name: shop
version: "1"
description: the shop's web server and its worker, one image, two RUN_CMDs
variables:
  - variable: code_dir
    description: the shop's code on the envd host
pods:
  - name: redis
    ports: [6379]
    containers:
      - { name: redis, image: "envd/redis:latest", env: { REDIS_PASSWORD: envd-redis } }
    ready: { kind: redis, port: 6379, password: envd-redis }
  - name: web
    ports: [8080]
    containers:
      - name: web
        image: envd/app:latest
        env: { GIT_REPO_NAME: shop, RUN_CMD: python3 app.py, REDIS_URL: "redis://:envd-redis@redis:6379/0" }
        dirs: [{ source: "{{ code_dir }}", path: /data/home/work/shop }]
    ready: { kind: http, port: 8080, path: / }
  - name: worker
    containers:
      - name: worker
        image: envd/app:latest
        env:
          GIT_REPO_NAME: shop
          INI_CMD: touch /tmp/ini-done
          RUN_CMD: python3 worker.py
          REDIS_URL: "redis://:envd-redis@redis:6379/0"
        dirs: [{ source: "{{ code_dir }}", path: /data/home/work/shop }]
    ready: { kind: exec, command: [test, -f, /tmp/ini-done] }
"#;

const WORKER: &str = r#"
import os, time, redis
r = redis.Redis.from_url(os.environ["REDIS_URL"])
print("worker: waiting for jobs", flush=True)
while True:
    try:
        item = r.brpop("jobs", timeout=1)
        if item:
            r.set("done:" + item[1].decode(), "by " + os.environ["GIT_REPO_NAME"] + " worker")
    except redis.exceptions.ConnectionError:
        time.sleep(0.2)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_and_worker_from_one_image_with_code_from_a_host_dir() {
    let tpl = template_dir("shop", APP_TEMPLATE);
    let code = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(code.path()).unwrap();
    let Some(h) = harness_with(243, Some(tpl.path().to_path_buf()), |cfg| {
        cfg.dirs_roots = vec![root]
    })
    .await
    else {
        return;
    };
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/app/sample/app.py");
    std::fs::copy(sample, code.path().join("app.py")).unwrap();
    std::fs::write(code.path().join("worker.py"), WORKER).unwrap();
    let dir = code.path().to_string_lossy().to_string();
    let (env, _guard) = h.ready("shop", &[("code_dir", &dir)]).await;
    let ip = env.node_ip.clone().unwrap();

    // The web server answers with the project's name (GIT_REPO_NAME).
    let root: serde_json::Value = reqwest::get(format!("http://{ip}:8080/"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root["service"], "shop");
    // The worker takes a job from Redis and leaves its result.
    let mut r = redis_db(&ip, 0).await;
    let _: () = redis::cmd("LPUSH")
        .arg("jobs")
        .arg("j1")
        .query_async(&mut r)
        .await
        .unwrap();
    let mut done: Option<String> = None;
    for _ in 0..100 {
        done = redis::cmd("GET")
            .arg("done:j1")
            .query_async(&mut r)
            .await
            .unwrap();
        if done.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done.as_deref(), Some("by shop worker"));

    assert_eq!(h.teardown(&env.id).await.state, State::Gone);
    h.assert_nothing_left(&env).await;
}

/// Bad input is refused with the field named, before anything is stored.
#[tokio::test]
async fn bad_init_files_dirs_and_clones_are_refused_with_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("envd.db").display()
    ))
    .await
    .unwrap();
    let tpl = template_dir("shop", APP_TEMPLATE);
    let catalog = Catalog::new(Some(tpl.path().to_path_buf()));
    let limits = Limits::default();
    let field = |r: envd::error::Result<envd::store::Created>| match r {
        Err(Error::Invalid { field, .. }) => field,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted"),
    };

    let mut req = request("full", &[]);
    req.init
        .insert("postgres".into(), init_file("a.sql", "SELECT 1;"));
    assert_eq!(
        field(service::create(&store, &catalog, &limits, req).await),
        "init.postgres"
    );

    let mut req = request("full", &[]);
    req.init
        .insert("mysql".into(), init_file("../etc/passwd", "x"));
    assert_eq!(
        field(service::create(&store, &catalog, &limits, req).await),
        "init.mysql[0].name"
    );

    let mut req = request("full", &[]);
    req.init
        .insert("mysql".into(), init_file("big.sql", &"x".repeat(9 << 20)));
    assert_eq!(
        field(service::create(&store, &catalog, &limits, req).await),
        "init"
    );

    let req = request("shop", &[("code_dir", "/nonexistent/shop")]);
    assert_eq!(
        field(service::create(&store, &catalog, &limits, req).await),
        "pods[1].containers[0].dirs[0].source"
    );
    let req = request("shop", &[("code_dir", "relative/shop")]);
    assert_eq!(
        field(service::create(&store, &catalog, &limits, req).await),
        "pods[1].containers[0].dirs[0].source"
    );
    // Only under the operator's roots, none by default: the store and keys stay home.
    let roots = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(roots.path()).unwrap();
    std::fs::create_dir_all(root.join("shop")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("escape")).unwrap();
    let rooted = Limits {
        dirs_roots: vec![root.clone()],
        ..Limits::default()
    };
    let shop = root.join("shop").display().to_string();
    let refused = |limits: Limits, dir: String| {
        let (store, catalog) = (&store, &catalog);
        async move {
            let req = request("shop", &[("code_dir", &dir)]);
            match service::create(store, catalog, &limits, req).await {
                Err(Error::Invalid { field, reason, .. }) => {
                    assert_eq!(field, "pods[1].containers[0].dirs[0].source", "{dir}");
                    println!("{dir}: {reason}");
                }
                Err(e) => panic!("{dir}: {e}"),
                Ok(_) => panic!("{dir}: accepted"),
            }
        }
    };
    refused(Limits::default(), shop.clone()).await;
    refused(Limits::default(), "/root/.ssh".into()).await;
    refused(rooted.clone(), "/var/lib/envd".into()).await;
    refused(rooted.clone(), format!("{shop}/../../etc")).await;
    refused(rooted.clone(), format!("{}/escape", root.display())).await;
    assert!(!outside.path().join("shop").exists());
    assert!(
        store.list(&Default::default()).await.unwrap().is_empty(),
        "nothing stored"
    );

    let missing = service::clone(&store, &limits, "nope", CloneRequest::default()).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    // A requested (not yet ready) env cannot be cloned: its data is not there yet.
    let envd::store::Created::New(env) =
        service::create(&store, &catalog, &limits, request("minimal", &[]))
            .await
            .unwrap()
    else {
        panic!("new env")
    };
    let early = service::clone(&store, &limits, &env.id, CloneRequest::default()).await;
    assert!(matches!(early, Err(Error::Conflict(_))), "{early:?}");
}
