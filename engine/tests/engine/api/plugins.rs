//! Given the reference policy component: it is uploaded with settings and bound to a model,
//! listed with the defaults, refused when it is not what the query says (wrong kind, bad
//! settings, not a component, too large, a malformed query) and unbound; bound as the default
//! of its kind, and the embedded default put back.

use fota_engine::plugin::embedded;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::api::bed::{Bed, MAX_UPLOAD, VIEWER};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_are_uploaded_bound_listed_refused_and_unbound() {
    let bed = Bed::start().await;
    let api = &bed.api;
    let policy = embedded::THRESHOLD_POLICY.to_vec();
    let install = |query: &str, wasm: Vec<u8>| api.upload(format!("/v1/plugins?{query}"), wasm);

    let installed = install(
        "kind=policy&vendor=Acme&model=NB-1&name=strict\
         &setting=min-battery%3D50&setting=retry-seconds=60",
        policy.clone(),
    )
    .await
    .expect(StatusCode::CREATED)
    .json();
    let strict = json!({
        "kind": "policy", "vendor": "Acme", "model": "NB-1", "name": "strict",
        "settings": { "min-battery": "50", "retry-seconds": "60" },
    });
    assert_eq!(installed, strict);
    let listed = bed
        .api
        .with_token(Some(VIEWER))
        .get("/v1/plugins")
        .await
        .expect(StatusCode::OK)
        .json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 5, "four defaults and the binding: {listed:?}");
    assert!(listed.contains(&strict));
    let default = json!({
        "kind": "policy",
        "vendor": null,
        "model": null,
        "name": embedded::THRESHOLD_POLICY_NAME,
        "settings": {},
    });
    assert!(listed.contains(&default));

    let refused = [
        (
            "kind=differ&vendor=Acme&model=NB-2&name=x",
            StatusCode::UNPROCESSABLE_ENTITY,
            "differ",
        ),
        (
            "kind=policy&vendor=Acme&model=NB-2&name=x&setting=min-battery=many",
            StatusCode::UNPROCESSABLE_ENTITY,
            "min-battery",
        ),
        (
            "kind=policy&vendor=Acme&model=NB-2&name=x&setting=colour=red",
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (
            "kind=policy&vendor=Acme&name=x",
            StatusCode::BAD_REQUEST,
            "vendor and model",
        ),
        (
            "kind=policy&vendor=Acme&model=NB-2",
            StatusCode::BAD_REQUEST,
            "name",
        ),
        (
            "kind=magic&vendor=Acme&model=NB-2&name=x",
            StatusCode::BAD_REQUEST,
            "magic",
        ),
        (
            "kind=policy&vendor=Acme&model=NB-2&name=x&setting=loose",
            StatusCode::BAD_REQUEST,
            "loose",
        ),
        (
            "kind=policy&vendor=Acme&model=NB-2&name=x&colour=red",
            StatusCode::BAD_REQUEST,
            "colour",
        ),
    ];
    for (query, status, named) in refused {
        let slug = if status == StatusCode::BAD_REQUEST {
            "bad-request"
        } else {
            "invalid"
        };
        let detail = install(query, policy.clone()).await.problem(status, slug);
        assert!(detail.contains(named), "{query}: {detail}");
    }
    install(
        "kind=policy&vendor=Acme&model=NB-2&name=x",
        b"not wasm".to_vec(),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    install(
        "kind=policy&vendor=Acme&model=NB-2&name=x",
        vec![0; MAX_UPLOAD + 1],
    )
    .await
    .problem(StatusCode::PAYLOAD_TOO_LARGE, "too-large");
    let listed = api.get("/v1/plugins").await.json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        5,
        "refused uploads bound nothing"
    );

    // Settings change without an upload: refused ones change nothing.
    let path = "/v1/plugins/policy/Acme/NB-1";
    let settings = json!({ "settings": { "min-battery": "70" } });
    let changed = api
        .json(Method::PATCH, path, &settings)
        .await
        .expect(StatusCode::OK)
        .json();
    assert_eq!(changed["name"], "strict");
    assert_eq!(changed["settings"], json!({ "min-battery": "70" }));
    let bad = json!({ "settings": { "min-battery": "many" } });
    let detail = api
        .json(Method::PATCH, path, &bad)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(detail.contains("min-battery"), "{detail}");
    api.json(Method::PATCH, "/v1/plugins/magic/Acme/NB-1", &settings)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let listed = api.get("/v1/plugins").await.json();
    let strict = json!({
        "kind": "policy", "vendor": "Acme", "model": "NB-1", "name": "strict",
        "settings": { "min-battery": "70" },
    });
    assert!(listed.as_array().unwrap().contains(&strict), "{listed}");

    api.delete("/v1/plugins/policy/Acme/NB-1")
        .await
        .expect(StatusCode::NO_CONTENT);
    api.delete("/v1/plugins/policy/Acme/NB-1")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    api.delete("/v1/plugins/magic/Acme/NB-1")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(
        api.get("/v1/plugins")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        4
    );

    let lenient = install(
        "kind=policy&name=lenient&setting=min-battery=5",
        policy.clone(),
    )
    .await
    .expect(StatusCode::CREATED)
    .json();
    let lenient_default = json!({
        "kind": "policy", "vendor": null, "model": null, "name": "lenient",
        "settings": { "min-battery": "5" },
    });
    assert_eq!(lenient, lenient_default);
    let listed = api.get("/v1/plugins").await.json();
    assert!(
        listed.as_array().unwrap().contains(&lenient_default),
        "{listed}"
    );
    assert!(!listed.as_array().unwrap().contains(&default), "{listed}");
    api.delete("/v1/plugins/magic")
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    api.delete("/v1/plugins/policy")
        .await
        .expect(StatusCode::NO_CONTENT);
    let listed = api.get("/v1/plugins").await.json();
    assert!(listed.as_array().unwrap().contains(&default), "{listed}");
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
}
