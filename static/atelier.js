// Every page: the top bar's menu, the sidebar drawer, the theme toggle, and copy buttons
// on code blocks. Pages call Atelier.decorate(element) after inserting rendered HTML.
(function () {
  "use strict";
  const root = document.documentElement;
  const topbar = document.getElementById("topbar");

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    // Plain http on another host: the old way.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function flash(button, label) {
    const before = button.dataset.label || button.textContent;
    button.dataset.label = before;
    button.textContent = label;
    button.classList.toggle("copied", label === "Copied");
    setTimeout(function () {
      button.textContent = before;
      button.classList.remove("copied");
    }, 1500);
  }

  function copyButton(className, title, textOf) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link " + className;
    button.textContent = "Copy";
    button.title = title;
    button.addEventListener("click", function () {
      copyText(textOf()).then(
        function () { flash(button, "Copied"); },
        function () { flash(button, "Copy failed"); }
      );
    });
    return button;
  }

  // A copy button in the head of every code block under `element`.
  function decorate(element) {
    element.querySelectorAll(".codeblock").forEach(function (block) {
      const head = block.querySelector(".code-head");
      const code = block.querySelector("pre code");
      if (!head || !code || head.querySelector(".copy-code")) return;
      head.appendChild(copyButton("copy-code", "Copy the code", function () { return code.textContent; }));
    });
  }

  const menu = document.getElementById("menu-button");
  if (menu && topbar) {
    menu.addEventListener("click", function () {
      const open = topbar.classList.toggle("nav-open");
      menu.setAttribute("aria-expanded", String(open));
    });
  }

  // The drawer (chat and studio sidebars on a phone).
  const drawerButton = document.getElementById("drawer-button");
  const backdrop = document.getElementById("drawer-backdrop");
  function setDrawer(open) {
    document.body.classList.toggle("drawer-open", open);
    if (drawerButton) drawerButton.setAttribute("aria-expanded", String(open));
  }
  if (drawerButton) {
    drawerButton.addEventListener("click", function () {
      setDrawer(!document.body.classList.contains("drawer-open"));
    });
  }
  if (backdrop) backdrop.addEventListener("click", function () { setDrawer(false); });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && document.body.classList.contains("drawer-open")) setDrawer(false);
  });

  // Theme: system -> dark -> light -> system, saved for the user without a reload.
  const themeForm = document.getElementById("theme-form");
  const NEXT = { system: "dark", dark: "light", light: "system" };
  const NAMES = { system: "follow the system", dark: "dark", light: "light" };
  if (themeForm) {
    const toggle = document.getElementById("theme-toggle");
    themeForm.addEventListener("submit", function (e) {
      e.preventDefault();
      const chosen = toggle.value;
      const body = new FormData(themeForm);
      body.set("theme", chosen);
      fetch(themeForm.action, { method: "POST", body: body, headers: { "X-Requested-With": "fetch" } })
        .then(function (response) {
          if (!response.ok) throw new Error("theme not saved");
          root.dataset.theme = chosen;
          toggle.value = NEXT[chosen];
          toggle.title = "Theme: " + NAMES[chosen] + " (click to change)";
          toggle.setAttribute("aria-label", "Theme: " + NAMES[chosen]);
        })
        .catch(function () {
          // Saved the plain way then: the form posts and the page comes back.
          const field = document.createElement("input");
          field.type = "hidden";
          field.name = "theme";
          field.value = chosen;
          themeForm.appendChild(field);
          themeForm.submit();
        });
    });
  }

  decorate(document);
  window.Atelier = { decorate: decorate, copyText: copyText, copyButton: copyButton };
})();
