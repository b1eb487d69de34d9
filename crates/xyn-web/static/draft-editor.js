// The draft editor: CodeMirror 5 (from its npm package, embedded by build.rs) over the
// definition's <textarea>, which stays the form field, so the page works without JavaScript.
// Line numbers, YAML highlighting, spaces for tabs. The lines that validation issues point at
// ("line 14" next to an issue) are marked in the editor, and clicking "line 14" puts the
// cursor there. htmx swaps the whole editor after save and validate: it is set up again on
// every swap, keeping the cursor and the scroll position.
(() => {
  const GUTTER = 'cm-issues';
  let kept = null; // cursor and scroll of the editor that an htmx swap is about to replace

  function instance(root) {
    const el = (root || document).querySelector('.CodeMirror');
    return el && el.CodeMirror;
  }

  function markIssues(cm, root) {
    const lines = new Set();
    for (const a of root.querySelectorAll('[data-line]')) {
      const n = Number.parseInt(a.getAttribute('data-line'), 10);
      if (n >= 1 && n <= cm.lineCount()) lines.add(n - 1);
    }
    for (const n of lines) {
      cm.addLineClass(n, 'background', 'cm-issue-line');
      const dot = document.createElement('span');
      dot.className = 'cm-issue-marker';
      dot.textContent = '●';
      dot.title = 'A problem on this line (see the list above)';
      cm.setGutterMarker(n, GUTTER, dot);
    }
  }

  function enhance(root) {
    const ta = root.querySelector('textarea[data-editor=yaml]');
    if (!ta || ta.hasAttribute('data-enhanced') || typeof CodeMirror !== 'function') return;
    ta.setAttribute('data-enhanced', '');
    const cm = CodeMirror.fromTextArea(ta, {
      mode: 'yaml',
      theme: 'xyn',
      lineNumbers: true,
      gutters: [GUTTER, 'CodeMirror-linenumbers'],
      indentUnit: 2,
      tabSize: 2,
      indentWithTabs: false,
      smartIndent: true,
      screenReaderLabel: 'Definition (YAML or JSON)',
      extraKeys: {
        // YAML forbids tabs for indentation: Tab indents with spaces.
        Tab: (ed) => (ed.somethingSelected()
          ? ed.indentSelection('add')
          : ed.replaceSelection(' '.repeat(ed.getOption('indentUnit')), 'end')),
        'Shift-Tab': (ed) => ed.indentSelection('subtract'),
        // Tab stays in the editor, so the keyboard leaves it with Esc (to the form's buttons).
        Esc: () => {
          const button = ta.form && ta.form.querySelector('button[type=submit]');
          if (button) button.focus();
        },
      },
    });
    cm.getWrapperElement().setAttribute('data-testid', 'draft-code-editor');
    const hint = document.createElement('p');
    hint.className = 'muted small editor-hint';
    hint.textContent = 'Tab indents with spaces; Esc leaves the editor.';
    cm.getWrapperElement().after(hint);
    // The textarea is what the form sends (by a plain submit or by htmx): keep it current.
    cm.on('change', () => cm.save());
    markIssues(cm, root);
    if (kept) {
      cm.setCursor(kept.cursor);
      cm.scrollTo(kept.scroll.left, kept.scroll.top);
      if (kept.focused) cm.focus();
      kept = null;
    }
  }

  // "line 14" next to an issue: the cursor goes to that line (without JavaScript the link
  // leads to the textarea).
  document.addEventListener('click', (e) => {
    const a = e.target instanceof Element && e.target.closest('a[data-line]');
    if (!a) return;
    const cm = instance(a.closest('#draft-editor'));
    if (!cm) return;
    e.preventDefault();
    const line = Number.parseInt(a.getAttribute('data-line'), 10) - 1;
    if (!(line >= 0 && line < cm.lineCount())) return;
    cm.focus();
    cm.setCursor({ line, ch: cm.getLine(line).search(/\S|$/) });
    cm.scrollIntoView(null, 80);
  });

  document.addEventListener('htmx:beforeSwap', (e) => {
    const cm = instance(e.detail.target);
    if (!cm) return;
    const scroll = cm.getScrollInfo();
    kept = { cursor: cm.getCursor(), scroll: { left: scroll.left, top: scroll.top }, focused: cm.hasFocus() };
  });
  document.addEventListener('htmx:load', (e) => enhance(e.target));
  enhance(document);
})();
