//! Markdown to safe HTML, for a request's purpose (Verified Orchestration's `purpose` is
//! markdown written by an application, so it is untrusted).
//!
//! Safety is decided on pulldown-cmark's events, before any HTML exists: raw HTML in the
//! source (block or inline, `<script>` included) is turned into text and so escaped, and a
//! link or image whose destination is not `http`, `https`, `mailto` or a relative path is
//! rendered as plain text. Nothing written by the author reaches the page as markup, so there
//! is no HTML sanitiser to get wrong. Images are shown as their alt text, so that a page
//! never fetches from an address an application chose.

use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};

/// Renders `text` as HTML that carries no script, no event handler and no dangerous URL.
pub fn render(text: &str) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_STRIKETHROUGH);
    opts.insert(Options::ENABLE_TASKLISTS);
    // A link whose destination is refused is dropped, with its text kept; the matching end
    // must then be dropped too, so refused links are counted.
    let mut dropped: Vec<bool> = Vec::new();
    let mut in_image = 0usize;
    let events = Parser::new_ext(text, opts).filter_map(|ev| match ev {
        Event::Html(h) | Event::InlineHtml(h) => Some(Event::Text(h)),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => {
            let ok = link_type == LinkType::Email || safe_url(&dest_url);
            dropped.push(!ok);
            ok.then_some(Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }))
        }
        Event::End(TagEnd::Link) => {
            let was_dropped = dropped.pop().unwrap_or(true);
            (!was_dropped).then_some(Event::End(TagEnd::Link))
        }
        Event::Start(Tag::Image { .. }) => {
            in_image += 1;
            None
        }
        Event::End(TagEnd::Image) => {
            in_image = in_image.saturating_sub(1);
            None
        }
        Event::Text(t) if in_image > 0 => Some(Event::Text(CowStr::from(format!("[{t}]")))),
        other => Some(other),
    });
    let mut out = String::with_capacity(text.len() * 2);
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

/// `http`, `https`, `mailto`, or a URL without a scheme (relative, or a fragment).
fn safe_url(url: &str) -> bool {
    // Browsers ignore tabs and newlines inside a scheme and lower-case it, so judge the
    // scheme on the text with those removed.
    let cleaned: String = url
        .trim()
        .chars()
        .filter(|c| !c.is_ascii_control() && !c.is_whitespace())
        .collect();
    match cleaned.find(':') {
        None => true,
        Some(i) => {
            let scheme = &cleaned[..i];
            // A colon after the first `/`, `?` or `#` is not a scheme separator.
            if scheme.contains(['/', '?', '#']) {
                return true;
            }
            matches!(
                scheme.to_ascii_lowercase().as_str(),
                "http" | "https" | "mailto"
            )
        }
    }
}

/// Whether a URL may be shown as a link on a page (the request's reference link).
pub fn linkable(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_raw_html_are_escaped() {
        let html = render(
            "Deploy **v2**\n\n<script>alert(1)</script>\n\nand <img src=x onerror=alert(2)> inline",
        );
        assert!(html.contains("<strong>v2</strong>"), "{html}");
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn dangerous_link_schemes_lose_their_link_and_keep_their_text() {
        for url in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "java\tscript:alert(1)",
            " javascript:alert(1)",
            "data:text/html;base64,PHNjcmlwdD4=",
            "vbscript:msgbox",
        ] {
            let html = render(&format!("[click me](<{url}>) please"));
            assert!(!html.contains("<a"), "{url}: {html}");
            assert!(html.contains("click me"), "{url}: {html}");
        }
        let html = render("<javascript:alert(1)>");
        assert!(!html.contains("href"), "{html}");
    }

    #[test]
    fn ordinary_links_stay_links() {
        let html = render(
            "[runbook](https://wiki.example/runbook) and [here](#steps) and <ops@example.com>",
        );
        assert!(
            html.contains(r#"<a href="https://wiki.example/runbook">runbook</a>"#),
            "{html}"
        );
        assert!(html.contains(r##"<a href="#steps">here</a>"##), "{html}");
        assert!(html.contains("mailto:ops@example.com"), "{html}");
    }

    #[test]
    fn images_are_shown_as_their_alt_text() {
        let html = render("![tracking pixel](https://evil.example/p.png)");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("[tracking pixel]"), "{html}");
    }
}
