// Test plugin in JavaScript: each event type shows one thing the host does for guests
// of any language (output kept, exceptions reported, nothing granted).

export const handler = {
  subscriptions() {
    return ["probe.#"];
  },

  handle(event) {
    console.log(`js-probe handling ${event.id}`);
    switch (event.type) {
      case "probe.noop":
        return;
      case "probe.throw":
        console.error("about to fail on purpose");
        throw new TypeError(`deliberate failure for ${event.subject}`);
      // The request reaches the host (which refuses it and notes so on stderr); the
      // exception after it makes the stderr part of the reason.
      case "probe.fetch":
        fetch("http://127.0.0.1:9/denied").catch(() => {});
        throw new Error("fetch sent");
      default:
        throw { tag: "permanent", val: `unknown probe ${event.type}` };
    }
  },
};

export const migrations = {
  migrations() {
    return [];
  },
};
