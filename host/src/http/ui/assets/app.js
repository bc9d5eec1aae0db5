// Live updates for the eventhost dashboard. Every section with a `data-part` address is
// fetched again every few seconds and its HTML (rendered and escaped by the server)
// swapped in. A section the operator is working in (a ticked box, an open body, focus)
// is left alone until they are done. Without JavaScript the page is the same, only
// static.
"use strict";
(function () {
  const PERIOD_MS = 2000;
  const sections = Array.from(document.querySelectorAll("section[data-part]"));
  if (sections.length === 0) return;

  function busy(section) {
    return section.querySelector("input:checked, details[open]") !== null ||
      section.contains(document.activeElement);
  }

  async function refresh(section) {
    if (busy(section)) return;
    let answer;
    try {
      answer = await fetch(section.dataset.part, { credentials: "same-origin", cache: "no-store" });
    } catch (_) {
      document.body.dataset.live = "offline";
      return;
    }
    if (answer.status === 401) {
      document.body.dataset.live = "signed-out";
      return;
    }
    if (!answer.ok) {
      document.body.dataset.live = "error";
      return;
    }
    const html = await answer.text();
    if (busy(section)) return;
    const fresh = document.createElement("template");
    fresh.innerHTML = html;
    section.replaceChildren(fresh.content);
    document.body.dataset.live = "on";
  }

  function tick() {
    if (document.hidden) return;
    sections.forEach(refresh);
  }
  document.body.dataset.live = "on";
  setInterval(tick, PERIOD_MS);
})();
