//! The pages' colours (light and dark, chosen by the browser's
//! `prefers-color-scheme`) and their stylesheet. The colours live here as
//! values so a test can hold every text colour to WCAG's 4.5:1 contrast.

use std::sync::OnceLock;

/// One theme's colours, as `#rrggbb`.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub background: &'static str,
    /// Tables' and cards' background.
    pub surface: &'static str,
    pub text: &'static str,
    pub muted: &'static str,
    pub border: &'static str,
    pub link: &'static str,
    pub up: &'static str,
    pub down: &'static str,
    /// Degraded: availability under its objective, a pending alert.
    pub warn: &'static str,
    /// The chart's lines: p50, p95, p99.
    pub lines: [&'static str; 3],
}

/// The light theme (GitHub Primer's accessible greens and reds).
pub const LIGHT: Palette = Palette {
    background: "#ffffff",
    surface: "#f6f8fa",
    text: "#1f2328",
    muted: "#59636e",
    border: "#d1d9e0",
    link: "#0550ae",
    up: "#1a7f37",
    down: "#cf222e",
    warn: "#8a4600",
    lines: ["#0550ae", "#8a4600", "#cf222e"],
};

/// The dark theme.
pub const DARK: Palette = Palette {
    background: "#0d1117",
    surface: "#151b23",
    text: "#e6edf3",
    muted: "#9198a1",
    border: "#3d444d",
    link: "#4493f8",
    up: "#3fb950",
    down: "#f85149",
    warn: "#d29922",
    lines: ["#4493f8", "#d29922", "#f85149"],
};

impl Palette {
    fn vars(&self) -> String {
        format!(
            "--bg:{};--surface:{};--text:{};--muted:{};--border:{};--link:{};--up:{};--down:{};--warn:{};--p50:{};--p95:{};--p99:{};",
            self.background,
            self.surface,
            self.text,
            self.muted,
            self.border,
            self.link,
            self.up,
            self.down,
            self.warn,
            self.lines[0],
            self.lines[1],
            self.lines[2]
        )
    }
}

/// The rules, written once for both themes (their colours are variables).
const RULES: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--text)}
a{color:var(--link)}
a:focus-visible,button:focus-visible,select:focus-visible,input:focus-visible,summary:focus-visible{outline:3px solid var(--link);outline-offset:2px}
.skip{position:absolute;left:-9999px;top:.4rem;padding:.3rem .6rem;background:var(--surface);border:1px solid var(--border);z-index:1}
.skip:focus{left:1rem}
header.top{display:flex;flex-wrap:wrap;gap:.5rem 1.25rem;align-items:center;padding:.6rem 1rem;border-bottom:1px solid var(--border);background:var(--surface)}
header.top .brand{font-weight:700;text-decoration:none;color:var(--text)}
main{padding:1rem;max-width:1200px;margin:0 auto}
h1{font-size:1.4rem;margin:.2rem 0 .8rem}
h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
.muted{color:var(--muted)}
.up{color:var(--up)}
.down{color:var(--down)}
.warn{color:var(--warn)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:var(--surface)}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--border);vertical-align:top}
th{font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.badge{display:inline-block;padding:0 .45rem;border:1px solid currentColor;border-radius:1rem;font-size:.85em;font-weight:600;white-space:nowrap}
form.filter{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin:.5rem 0 1rem}
form.filter label{display:flex;flex-direction:column;font-size:.85em;color:var(--muted)}
input,select,button{font:inherit;color:var(--text);background:var(--bg);border:1px solid var(--border);border-radius:4px;padding:.25rem .5rem}
button{cursor:pointer}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(14rem,1fr));gap:.6rem}
.card{background:var(--surface);border:1px solid var(--border);border-radius:6px;padding:.5rem .7rem}
.card b{display:block;font-size:1.2rem}
svg.chart{width:100%;height:auto;background:var(--surface);border:1px solid var(--border);border-radius:6px}
svg.bar{width:100%;max-width:22rem;height:1.1rem;display:block}
svg.waterfall{width:12rem;height:.9rem;display:block}
.legend span{margin-right:1rem;white-space:nowrap}
.legend i{display:inline-block;width:.9rem;height:.25rem;margin-right:.3rem;vertical-align:middle}
pre{background:var(--surface);border:1px solid var(--border);border-radius:6px;padding:.6rem;overflow-x:auto;font-size:.85em}
details{margin:.3rem 0}
ul.plain{padding-left:1.1rem}
svg .grid{stroke:var(--border);stroke-width:1}
svg .axis{fill:var(--muted);font-size:11px}
svg .series{fill:none;stroke-width:1.6}
svg .line-p50{stroke:var(--p50)}svg .line-p95{stroke:var(--p95)}svg .line-p99{stroke:var(--p99)}
svg .dot-0{fill:var(--p50)}svg .dot-1{fill:var(--p95)}svg .dot-2{fill:var(--p99)}
svg .mark-trend,svg .mark-event,svg .mark-alert{stroke-width:2;stroke-dasharray:4 3}
svg .mark-trend{stroke:var(--warn)}svg .mark-event{stroke:var(--link)}svg .mark-alert{stroke:var(--down)}
.fill-up{fill:var(--up)}.fill-warn{fill:var(--warn)}.fill-down{fill:var(--down)}.fill-muted{fill:var(--border)}.fill-p50{fill:var(--p50)}.fill-p95{fill:var(--p95)}
.key-p50{background:var(--p50)}.key-p95{background:var(--p95)}.key-p99{background:var(--p99)}.key-trend{background:var(--warn)}.key-event{background:var(--link)}.key-alert{background:var(--down)}
@media (max-width:640px){main{padding:.6rem}th,td{padding:.3rem}.hide-narrow{display:none}}
"#;

/// The stylesheet: the light theme's colours, the dark theme's when the
/// browser prefers it, and the rules.
pub fn css() -> &'static str {
    static CSS: OnceLock<String> = OnceLock::new();
    CSS.get_or_init(|| {
        format!(
            ":root{{color-scheme:light dark;{}}}\n@media (prefers-color-scheme:dark){{:root{{{}}}}}\n{}",
            LIGHT.vars(),
            DARK.vars(),
            RULES
        )
    })
}

/// WCAG 2's contrast ratio of two `#rrggbb` colours (1 to 21).
pub fn contrast(a: &str, b: &str) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

fn luminance(hex: &str) -> f64 {
    let channel = |i: usize| {
        let v = f64::from(u8::from_str_radix(hex.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0))
            / 255.0;
        if v <= 0.039_28 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every colour written as text, with the background it is written on.
    fn text_pairs(p: &Palette) -> Vec<(&'static str, &'static str, &'static str)> {
        let mut out = Vec::new();
        for bg in [p.background, p.surface] {
            for (name, fg) in [
                ("text", p.text),
                ("muted", p.muted),
                ("link", p.link),
                ("up", p.up),
                ("down", p.down),
                ("warn", p.warn),
            ] {
                out.push((name, fg, bg));
            }
        }
        out
    }

    #[test]
    fn every_text_colour_has_at_least_4_5_to_1_contrast_on_its_background() {
        assert!((contrast("#000000", "#ffffff") - 21.0).abs() < 1e-9);
        for (theme, p) in [("light", LIGHT), ("dark", DARK)] {
            for (name, fg, bg) in text_pairs(&p) {
                let c = contrast(fg, bg);
                assert!(c >= 4.5, "{theme}: {name} {fg} on {bg} is {c:.2}:1");
            }
        }
    }

    #[test]
    fn the_stylesheet_carries_both_themes() {
        let css = css();
        assert!(css.contains(LIGHT.up) && css.contains(DARK.up));
        assert!(css.contains("prefers-color-scheme:dark"));
    }
}
