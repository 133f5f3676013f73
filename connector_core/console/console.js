// The console's only script: live lists and copy buttons. Pages work without it.
"use strict";

// An element with data-live-url gets its content from that URL (a server-rendered
// fragment) every few seconds. A 401 means the session ended: reload, to the login page.
for (const element of document.querySelectorAll("[data-live-url]")) {
  const every = Number(element.dataset.liveEvery || 3000);
  const refresh = async () => {
    try {
      const response = await fetch(element.dataset.liveUrl, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "fetch" },
      });
      if (response.status === 401) {
        location.reload();
        return;
      }
      if (response.ok) {
        const html = await response.text();
        if (html !== element.dataset.liveLast) {
          element.innerHTML = html;
          element.dataset.liveLast = html;
        }
      }
    } catch (error) {
      // The service is restarting: try again at the next tick.
    }
    setTimeout(refresh, every);
  };
  setTimeout(refresh, every);
}

for (const button of document.querySelectorAll("[data-copy]")) {
  button.addEventListener("click", () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    navigator.clipboard.writeText(text).then(() => {
      button.classList.add("copied");
    });
  });
}
