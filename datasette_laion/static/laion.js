/* datasette-laion: safe mode (click to show, or show all when switched off)
   and placeholders for images that no longer load. Builds elements with DOM
   properties only: nothing here parses HTML. */
(function () {
  var KEY = "laion-safe-mode";
  function safeMode() {
    try { return localStorage.getItem(KEY) !== "off"; } catch (e) { return true; }
  }
  function reveal(span) {
    var link = document.createElement("a");
    link.href = span.dataset.href || span.dataset.src;  // the image; data-src: its thumbnail
    link.target = "_blank";
    link.rel = "noopener noreferrer nofollow";
    link.referrerPolicy = "no-referrer";
    var img = document.createElement("img");
    img.src = span.dataset.src;
    img.alt = span.dataset.alt || "";
    img.loading = "lazy";
    img.referrerPolicy = "no-referrer";
    link.appendChild(img);
    span.textContent = "";
    span.appendChild(link);
    span.classList.remove("laion-hidden");
    span.classList.add("laion-revealed");
  }
  function broken(img) {
    var thumb = img.closest(".laion-thumb");
    if (!thumb || thumb.querySelector(".laion-broken")) return;
    var box = document.createElement("span");
    box.className = "laion-broken";
    box.textContent = "image no longer available";
    box.title = img.alt || "";
    img.replaceWith(box);
  }
  document.addEventListener("error", function (event) {
    if (event.target && event.target.tagName === "IMG") broken(event.target);
  }, true);
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest(".laion-reveal");
    if (button) { event.preventDefault(); reveal(button.closest(".laion-hidden")); }
    var toggle = event.target.closest && event.target.closest(".laion-safe-toggle button");
    if (toggle) {
      try { localStorage.setItem(KEY, safeMode() ? "off" : "on"); } catch (e) {}
      location.reload();
    }
  });
  function init() {
    document.querySelectorAll(".laion-thumb img").forEach(function (img) {
      if (img.complete && img.naturalWidth === 0 && img.getAttribute("src")) broken(img);
    });
    if (!safeMode()) document.querySelectorAll(".laion-hidden").forEach(reveal);
    // Every page of the LAION site has the switch: the plugin's templates
    // write its place; on Datasette's own pages it goes first in the nav.
    var nav = document.querySelector("header nav");
    if (nav && !document.querySelector(".laion-safe-toggle")) {
      var place = document.createElement("span");
      place.className = "laion-safe-toggle";
      nav.insertBefore(place, nav.firstChild);
    }
    document.querySelectorAll(".laion-safe-toggle").forEach(function (el) {
      if (window.LAION_SAFE_MODE_NOTHING) {  // the dataset has no punsafe (views.safe_mode_threshold)
        el.textContent = "Safe mode: nothing to go on";
        el.title = "This dataset has no unsafe-content score (punsafe): every thumbnail is shown";
        return;
      }
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = "Safe mode: " + (safeMode() ? "on" : "off");
      button.title = safeMode() ? "Images flagged as possibly unsafe are hidden until clicked" : "All images are shown";
      el.textContent = "";
      el.appendChild(button);
    });
  }
  // On a guarded table (guard.py) the column menu offers no descending sort
  // where the site refuses it: hide it once Datasette's table.js has shown it.
  document.addEventListener("click", function (event) {
    var icon = event.target.closest && event.target.closest(".dropdown-menu-icon");
    var only = window.LAION_ASCENDING_ONLY;
    if (!icon || !only) return;
    var column = icon.closest("th").getAttribute("data-column");
    setTimeout(function () {
      document.querySelectorAll(".dropdown-menu a.dropdown-sort-desc").forEach(function (a) {
        if (only.indexOf(column) !== -1) a.parentNode.style.display = "none";
      });
    }, 0);
  }, true);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
