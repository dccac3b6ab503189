//! Folded stacks drawn as a flame graph: a plain SVG (a box per frame, its width its share of the
//! time, callers below callees, a tooltip per box), so a profile opens in any browser.

use std::{collections::BTreeMap, fmt::Write};

const WIDTH: f64 = 1200.0;
const ROW: f64 = 17.0;
const TOP: f64 = 40.0;
/// Boxes narrower than this many pixels are left out (their time is in their parent's box).
const MIN_WIDTH: f64 = 0.3;
/// Characters that fit a box, at about 7 pixels each.
const CHAR_WIDTH: f64 = 7.0;

#[derive(Default)]
struct Node {
    total: u64,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn depth(&self) -> usize {
        1 + self.children.values().map(Node::depth).max().unwrap_or(0)
    }
}

/// The SVG document for `stacks` (path, microseconds).
pub(super) fn svg(stacks: &[(String, u64)], title: &str) -> String {
    let mut root = Node::default();
    for (path, us) in stacks {
        root.total += us;
        let mut node = &mut root;
        for frame in path.split(';') {
            node = node.children.entry(frame.to_string()).or_default();
            node.total += us;
        }
    }
    let depth = root.depth() - 1;
    let height = TOP + ROW * depth as f64 + 10.0;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">
<style>text {{ font-family: monospace; font-size: 12px; fill: #000; pointer-events: none; }} rect:hover {{ stroke: #000; }}</style>
<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#f8f8f0"/>
<text x="{}" y="22" text-anchor="middle" style="font-size: 16px">{}</text>
"##,
        WIDTH / 2.0,
        escape(title)
    );
    let scale = if root.total == 0 {
        0.0
    } else {
        (WIDTH - 20.0) / root.total as f64
    };
    let frame = Frame {
        scale,
        all: root.total.max(1),
        bottom: height - 10.0,
    };
    let mut x = 10.0;
    for (name, child) in &root.children {
        frame.draw(&mut out, name, child, x, 0);
        x += child.total as f64 * scale;
    }
    out.push_str("</svg>\n");
    out
}

struct Frame {
    scale: f64,
    all: u64,
    bottom: f64,
}

impl Frame {
    fn draw(&self, out: &mut String, name: &str, node: &Node, x: f64, level: usize) {
        let width = node.total as f64 * self.scale;
        if width < MIN_WIDTH {
            return;
        }
        let y = self.bottom - ROW * (level + 1) as f64;
        let share = 100.0 * node.total as f64 / self.all as f64;
        let label = escape(name);
        let _ = writeln!(
            out,
            r#"<g><title>{label} ({} µs, {share:.2}%)</title><rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{:.1}" fill="{}" rx="2"/>"#,
            node.total,
            ROW - 1.0,
            color(name)
        );
        let fits = ((width - 6.0) / CHAR_WIDTH) as usize;
        if fits >= 3 {
            let text: String = match name.chars().count() <= fits {
                true => name.to_string(),
                false => name.chars().take(fits - 2).chain("..".chars()).collect(),
            };
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                x + 3.0,
                y + ROW - 5.0,
                escape(&text)
            );
        }
        out.push_str("</g>\n");
        let mut child_x = x;
        for (name, child) in &node.children {
            self.draw(out, name, child, child_x, level + 1);
            child_x += child.total as f64 * self.scale;
        }
    }
}

/// A warm colour that stays the same for a name from run to run.
fn color(name: &str) -> String {
    let hash = name.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ b as u32).wrapping_mul(16_777_619)
    });
    let red = 205 + hash % 50;
    let green = 80 + (hash >> 8) % 140;
    let blue = (hash >> 16) % 55;
    format!("rgb({red},{green},{blue})")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_as_wide_as_their_share_and_names_are_escaped() {
        let stacks = vec![
            ("main;pool_map;is_prime".to_string(), 750),
            ("main;<closure>@a.rhai:3".to_string(), 250),
        ];
        let svg = svg(&stacks, "t");
        assert!(svg.contains("is_prime (750 µs, 75.00%)"), "{svg}");
        assert!(
            svg.contains("&lt;closure&gt;@a.rhai:3 (250 µs, 25.00%)"),
            "{svg}"
        );
        assert!(
            svg.contains(r#"width="1180.0""#),
            "main spans the graph: {svg}"
        );
        assert!(
            svg.contains(r#"width="885.0""#),
            "pool_map is 75% of it: {svg}"
        );
    }
}
