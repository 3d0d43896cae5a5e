// Run by tests/test_pages_browser.py in each page: a horizontal scrollbar, text outside its box (the nearest block
// around it), a short word (6 characters or fewer, outside highlights in a sentence) broken across lines, and
// visible Latin words without a digit that are not in `allowed`. Hidden text, SVG tooltips and folded <details>
// are not read.
(allowed) => {
  const problems = [];
  const latin = new Set();
  const root = document.documentElement;
  if (root.scrollWidth > root.clientWidth + 1) problems.push(`horizontal scrollbar: ${root.scrollWidth} > ${root.clientWidth}`);
  const blockOf = (node) => {
    let box = node;
    while (box.parentElement && getComputedStyle(box).display.startsWith("inline")) box = box.parentElement;
    return box;
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.nodeValue;
    const parent = n.parentElement;
    if (!text.trim() || !parent || ["SCRIPT", "STYLE", "OPTION"].includes(parent.tagName)) continue;
    if (parent.closest("title")) continue;  // SVG tooltips
    if (!parent.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true })) continue;
    const folded = parent.closest("details");
    if (folded && !folded.open && !parent.closest("summary")) continue;
    const range = document.createRange();
    range.selectNodeContents(n);
    const rects = [...range.getClientRects()].filter((r) => r.width > 0);
    if (!rects.length) continue;
    const cls = typeof parent.className === "string" && parent.className ? `.${parent.className.split(" ")[0]}` : "";
    const where = `${parent.tagName.toLowerCase()}${parent.id ? `#${parent.id}` : ""}${cls}`;
    for (const m of text.matchAll(/[A-Za-z][A-Za-z0-9_.:\/-]*/g)) {
      if (!/\d/.test(m[0]) && !allowed.includes(m[0])) latin.add(`${m[0]} (${where}: ${text.trim().slice(0, 40)})`);
    }
    const box = blockOf(parent).getBoundingClientRect();
    for (const r of rects) {
      if (r.right > box.right + 1 || r.left < box.left - 1) {
        problems.push(`text outside its box at ${where}: "${text.trim().slice(0, 30)}"`);
        break;
      }
    }
    // A highlight inside a sentence (<mark>) wraps with the sentence; labels, cells and headings must not.
    if (parent.tagName === "MARK") continue;
    for (const m of text.matchAll(/\S+/g)) {
      if (m[0].length > 6) continue;
      range.setStart(n, m.index);
      range.setEnd(n, m.index + m[0].length);
      const lines = new Set([...range.getClientRects()].filter((r) => r.width > 0).map((r) => Math.round(r.bottom)));
      if (lines.size > 1) problems.push(`"${m[0]}" broken across ${lines.size} lines at ${where}`);
    }
  }
  return { problems, latin: [...latin] };
}
