//! A browser, as the sign-in tests drive one: a cookie jar, no redirects followed, the
//! navigations and API calls a page makes, and the steps of a sign-in at the development IdP.

use reqwest::header::{ACCEPT, LOCATION};
use std::collections::HashMap;
use std::time::Duration;

/// A browser: keeps cookies, follows no redirect (each hop is asserted).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The `Location` of a redirect (panics, naming the status, when there is none).
pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location on {}", r.status()))
        .to_str()
        .unwrap()
        .to_string()
}

/// Every `Set-Cookie` of `r`, whole (attributes included).
pub fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// `name=value` of each `Set-Cookie` of `r` (attributes dropped): what a browser sends back.
pub fn cookie_pairs(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect()
}

/// The query parameters of `url`.
pub fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// A page navigation (what a browser sends when a link is followed).
pub async fn navigate(b: &reqwest::Client, url: &str) -> reqwest::Response {
    b.get(url)
        .header(ACCEPT, "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap()
}

/// An API call from a page's script.
pub async fn api(b: &reqwest::Client, url: &str) -> reqwest::Response {
    b.get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

/// Starts a sign-in at `url` and returns the IdP's authorization URL.
pub async fn start_login(b: &reqwest::Client, url: &str) -> String {
    sent_to_sign_in(&navigate(b, url).await)
}

/// The authorization URL a navigation without a session is sent to (asserting the 302).
fn sent_to_sign_in(r: &reqwest::Response) -> String {
    assert_eq!(
        r.status(),
        302,
        "a navigation without a session goes to sign in"
    );
    location(r)
}

/// Chooses `user` on the development IdP's page; returns the callback URL it sends the
/// browser to.
pub async fn choose(b: &reqwest::Client, authorize: &str, user: &str) -> String {
    let r = b
        .get(format!("{authorize}&user={user}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    location(&r)
}

/// The whole sign-in at `url` as `user`; returns where the callback sends the browser.
pub async fn log_in(b: &reqwest::Client, url: &str, user: &str) -> String {
    finish_log_in(b, &start_login(b, url).await, user).await
}

/// The rest of a sign-in from the IdP's `authorize` URL: chooses `user`, follows the callback
/// (asserting its 302); returns where the callback sends the browser.
async fn finish_log_in(b: &reqwest::Client, authorize: &str, user: &str) -> String {
    let callback = choose(b, authorize, user).await;
    let r = b.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302, "callback: {}", r.text().await.unwrap());
    location(&r)
}

/// The same steps with each navigation announced as a current browser announces it:
/// `Accept: text/html` and `Sec-Fetch-Mode: navigate` (the attack suite's browser). Import
/// these by name to shadow the glob-imported ones.
pub mod fetch_metadata {
    use reqwest::header::ACCEPT;

    /// A page navigation with `Sec-Fetch-Mode: navigate`.
    pub async fn navigate(b: &reqwest::Client, url: &str) -> reqwest::Response {
        b.get(url)
            .header(ACCEPT, "text/html")
            .header("sec-fetch-mode", "navigate")
            .send()
            .await
            .unwrap()
    }

    /// [`super::start_login`] through [`navigate`].
    pub async fn start_login(b: &reqwest::Client, url: &str) -> String {
        super::sent_to_sign_in(&navigate(b, url).await)
    }

    /// [`super::log_in`] through [`start_login`].
    pub async fn log_in(b: &reqwest::Client, url: &str, user: &str) -> String {
        super::finish_log_in(b, &start_login(b, url).await, user).await
    }
}
