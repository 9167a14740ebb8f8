/* ImageMatch pages: small enhancements on top of pages that work without this script.
 * User data only ever reaches the page through textContent and setAttribute, never as HTML. */
"use strict";

(function () {
  /** An element with attributes and text, built without parsing any HTML. */
  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      node.setAttribute(name, value);
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  /** A size as the server words it (templating.human_bytes): "57 MB", "39.1 KB". */
  function humanBytes(size) {
    let value = size;
    for (const unit of ["bytes", "KB", "MB"]) {
      if (value < 1024) return unit === "bytes" ? `${size} bytes` : `${value.toFixed(1).replace(/\.0$/, "")} ${unit}`;
      value /= 1024;
    }
    return `${value.toFixed(1).replace(/\.0$/, "")} GB`;
  }

  /** The server's rule for typed form values (web/forms.py): numbers and true/false are typed,
   * "quoted" text stays text. */
  function typedValue(text) {
    const value = text.trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) return value.slice(1, -1);
    if (value === "true" || value === "false") return value === "true";
    if (/^-?[0-9]+$/.test(value)) {
      const number = Number(value);
      return Number.isSafeInteger(number) ? number : value;
    }
    if (/^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$/.test(value)) {
      const number = Number(value);
      if (Number.isFinite(number)) return number;
    }
    return value;
  }

  /** The tags of a list row's text, as web/forms.py reads them: comma-separated, "quoted" where a tag holds a
   * comma or a quote (doubled inside the quotes); empty ones are gaps. */
  function listItems(text) {
    const items = [];
    let current = "";
    let quoted = false;
    for (let i = 0; i < text.length; i += 1) {
      const ch = text[i];
      if (quoted) {
        if (ch === '"' && text[i + 1] === '"') {
          current += '"';
          i += 1;
        } else if (ch === '"') {
          quoted = false;
        } else {
          current += ch;
        }
      } else if (ch === '"' && current.trim() === "") {
        quoted = true;
        current = "";
      } else if (ch === ",") {
        items.push(current);
        current = "";
      } else {
        current += ch;
      }
    }
    items.push(current);
    return items.map((item) => item.trim()).filter((item) => item);
  }

  /** Tags as a list row's text: listItems (and the server) read them back unchanged. */
  function listText(items) {
    return items.map((item) => (/[,"]/.test(item) ? `"${item.replaceAll('"', '""')}"` : item)).join(", ");
  }

  /** The metadata rows of a form as an object, by the server's rules: a row without key and value is a
   * removed row, a value needs a key, a list row holds tags. */
  function metadataOf(form) {
    const entries = new Map();
    for (const row of form.querySelectorAll("[data-meta-rows] [data-meta-row]")) {
      const key = row.querySelector('[name="meta_key"]').value.trim();
      const text = row.querySelector('[name="meta_value"]').value;
      const kind = row.querySelector('[name="meta_type"]').value;
      if (!key) {
        if (text.trim()) {
          throw new Error(`A metadata row has the value "${text.trim()}" but no key; give it a key, or clear the value.`);
        }
        continue;
      }
      if (entries.has(key)) {
        throw new Error(`The metadata key "${key}" appears twice; keep one of them.`);
      }
      if (kind === "list") {
        const tags = listItems(text);
        if (!tags.length) throw new Error(`Metadata "${key}": add at least one tag, or clear the key.`);
        entries.set(key, tags);
      } else {
        entries.set(key, typedValue(text));
      }
    }
    return Object.fromEntries(entries);
  }

  /** Show a form as working: its submit button is disabled and says what is going on. */
  const busyButtons = new Map();

  function markBusy(form) {
    const button = form.querySelector('button[type="submit"]');
    if (!button || busyButtons.has(button)) return;
    busyButtons.set(button, button.textContent);
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = form.dataset.busyLabel || "Working…";
  }

  function clearBusy() {
    for (const [button, label] of busyButtons) {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      button.textContent = label;
    }
    busyButtons.clear();
  }

  function initBusyForms() {
    for (const form of document.querySelectorAll("form[data-busy-label]:not([data-upload-form])")) {
      form.addEventListener("submit", () => markBusy(form));
    }
    // Coming back with the Back button shows the page as it was left: buttons must work again.
    window.addEventListener("pageshow", clearBusy);
  }

  /** A list row's tags as chips: typed in the entry (Enter or a comma adds one), removed with their button
   * or Backspace. The row's text field stays the form field, kept in step and hidden. */
  function tagEditor(row) {
    const kind = row.querySelector("[data-meta-kind]");
    const field = row.querySelector("[data-meta-value]");
    let editor = null;

    function open() {
      const tags = listItems(field.value);
      const list = element("ul", { class: "tag-list" });
      const entry = element("input", {
        type: "text",
        class: "tag-entry",
        "aria-label": "Add a tag",
        placeholder: "add a tag, then Enter",
        autocomplete: "off",
      });
      const sync = () => {
        const pending = listItems(entry.value);
        field.value = listText([...tags, ...pending.filter((tag) => !tags.includes(tag))]);
      };
      const addChip = (tag) => {
        const chip = element("li", { class: "tag", "data-testid": "tag-chip" });
        const label = `Remove the tag ${tag}`;
        const remove = element("button", { type: "button", class: "chip-remove", "aria-label": label }, "×");
        remove.addEventListener("click", () => {
          tags.splice(tags.indexOf(tag), 1);
          chip.remove();
          sync();
          entry.focus();
        });
        chip.append(element("span", {}, tag), remove);
        list.append(chip);
      };
      const commit = () => {
        for (const tag of listItems(entry.value)) {
          if (tags.includes(tag)) continue;
          tags.push(tag);
          addChip(tag);
        }
        entry.value = "";
        sync();
      };
      entry.addEventListener("keydown", (event) => {
        const inQuotes = (entry.value.match(/"/g) || []).length % 2 === 1;
        if (event.key === "Enter" || (event.key === "," && !inQuotes)) {
          event.preventDefault();
          commit();
        } else if (event.key === "Backspace" && !entry.value && tags.length) {
          tags.pop();
          list.lastElementChild.remove();
          sync();
        }
      });
      // Typed text that is not a chip yet is saved all the same (sync). It stays text when the entry loses
      // focus: a chip added then would move the page under a click on Save.
      entry.addEventListener("input", sync);
      editor = element("div", { class: "tag-editor", "data-tag-editor": "" });
      editor.append(list, entry);
      field.hidden = true;
      field.after(editor);
      tags.forEach(addChip);
    }

    function close() {
      if (editor) editor.remove();
      editor = null;
      field.hidden = false;
    }

    function update() {
      if (kind.value !== "list") close();
      else if (!editor) open();
    }

    kind.addEventListener("change", () => {
      update();
      (editor ? editor.querySelector("input") : field).focus();
    });
    update();
  }

  function initMetadataFields() {
    for (const fieldset of document.querySelectorAll("[data-metadata]")) {
      const rows = fieldset.querySelector("[data-meta-rows]");
      const template = fieldset.querySelector("[data-meta-template]");
      const addButton = fieldset.querySelector("[data-add-row]");
      const enable = (row) => {
        row.querySelector("[data-remove-row]").hidden = false;
        tagEditor(row);
      };
      rows.querySelectorAll("[data-meta-row]").forEach(enable);
      addButton.hidden = false;
      addButton.addEventListener("click", () => {
        const row = template.content.querySelector("[data-meta-row]").cloneNode(true);
        rows.append(row);
        enable(row);
        row.querySelector("input").focus();
      });
      rows.addEventListener("click", (event) => {
        const button = event.target.closest("[data-remove-row]");
        if (!button) return;
        const row = button.closest("[data-meta-row]");
        const neighbour = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        (neighbour ? neighbour.querySelector("input") : addButton).focus();
      });
    }
  }

  /* Home: drag and drop, then upload the files one by one to the JSON API with a live report. */

  function reportRow(filename) {
    const item = element("li", { class: "report-item", "data-testid": "upload-result", "data-status": "waiting" });
    const badge = element("span", { class: "badge badge-waiting" }, "Waiting");
    item.append(badge, element("span", { class: "report-name" }, filename));

    function setBadge(status, label) {
      item.className = `report-item report-${status}`;
      item.dataset.status = status;
      badge.className = `badge badge-${status}`;
      badge.textContent = label;
    }

    return {
      element: item,
      uploading() {
        setBadge("uploading", "Uploading…");
      },
      finish(outcome) {
        if (outcome.status === "added") {
          setBadge("added", "Added");
          item.append(element("a", { href: outcome.image.links.page }, "Open"));
        } else if (outcome.status === "duplicate") {
          setBadge("duplicate", "Duplicate");
          const existing = outcome.existing;
          item.append(element("span", { class: "report-detail" }, outcome.reason));
          const link = element("a", { class: "report-existing", href: existing.links.page });
          const ratio = Math.min(1, 384 / Math.max(existing.width, existing.height));
          link.append(
            element("img", {
              src: existing.links.thumbnail,
              alt: "",
              width: String(Math.max(1, Math.round(existing.width * ratio))),
              height: String(Math.max(1, Math.round(existing.height * ratio))),
            }),
            element("span", {}, `Already stored as ${existing.filename}`),
          );
          item.append(link);
        } else {
          setBadge("failed", "Failed");
          item.append(element("span", { class: "report-detail" }, outcome.reason));
        }
      },
    };
  }

  /** Why a file cannot be sent at all, known before sending it: it is over the server's limit. */
  function tooLarge(file, limit) {
    return limit && file.size > limit ? `${file.name} is ${humanBytes(file.size)}; the limit is ${humanBytes(limit)}` : "";
  }

  /** A tile of "Recently added" from the API's JSON, like the image_tile macro. */
  function recentTile(image) {
    const tile = element("li", { class: "tile", "data-testid": "image-tile", "data-image-id": image.id });
    const link = element("a", { class: "tile-link", href: image.links.page });
    const ratio = Math.min(1, 384 / Math.max(image.width, image.height));
    const frame = element("span", { class: "frame" });
    frame.append(
      element("img", {
        src: image.links.thumbnail,
        alt: image.description || image.caption || image.filename,
        width: String(Math.max(1, Math.round(image.width * ratio))),
        height: String(Math.max(1, Math.round(image.height * ratio))),
        loading: "lazy",
        decoding: "async",
      }),
    );
    link.append(frame, element("span", { class: "tile-name" }, image.filename));
    const body = element("div", { class: "tile-body" });
    if (image.description) body.append(element("p", { class: "tile-text", "data-testid": "tile-description" }, image.description));
    if (image.caption) body.append(element("p", { class: "tile-text muted", "data-testid": "tile-caption" }, image.caption));
    tile.append(link, body);
    return tile;
  }

  /** "Recently added", "Browse all N" and the footer's count, read again after an upload. */
  async function refreshRecent() {
    const section = document.querySelector("[data-recent]");
    if (!section) return;
    let page;
    try {
      const response = await fetch(`/api/v1/images?limit=${Number(section.dataset.recentCount) || 8}`, {
        headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      page = await response.json();
    } catch {
      return; // the report says what happened; the list catches up at the next visit
    }
    const grid = section.querySelector("[data-recent-grid]");
    grid.replaceChildren(...page.items.map(recentTile));
    grid.hidden = page.items.length === 0;
    section.querySelector("[data-recent-empty]").hidden = page.items.length > 0;
    const browseAll = section.querySelector("[data-browse-all]");
    browseAll.textContent = `Browse all ${page.total}`;
    browseAll.hidden = page.total === 0;
    const footerCount = document.querySelector('[data-testid="footer-count"]');
    if (footerCount) footerCount.textContent = plural(page.total, "image");
  }

  async function uploadOne(file, description, metadata) {
    const body = new FormData();
    body.append("file", file, file.name);
    body.append("description", description);
    if (Object.keys(metadata).length) body.append("metadata", JSON.stringify(metadata));
    let response;
    try {
      response = await fetch("/api/v1/images", { method: "POST", body, headers: { Accept: "application/json" } });
    } catch {
      return { status: "failed", reason: "The upload did not reach the server; check the connection and try again." };
    }
    const answer = await response.json().catch(() => null);
    if (response.status === 201 && answer) return { status: "added", image: answer };
    if (response.status === 409 && answer && answer.existing) {
      const reason = String(answer.detail).replace(/^duplicate of \S+: /, "");
      return { status: "duplicate", reason, existing: answer.existing };
    }
    const detail = answer && typeof answer.detail === "string" ? answer.detail : `the server answered ${response.status}`;
    return { status: "failed", reason: detail };
  }

  function initUpload() {
    const form = document.querySelector("[data-upload-form]");
    if (!form) return;
    const input = form.querySelector("[data-upload-files]");
    const zone = form.querySelector("[data-dropzone]");
    const chosen = form.querySelector("[data-chosen-files]");
    const report = document.querySelector("[data-upload-report]");
    const list = report.querySelector("[data-upload-report-list]");
    const summary = report.querySelector("[data-upload-summary]");
    const errorBox = element("p", { class: "notice notice-error", role: "alert", "data-testid": "notice-error" });
    errorBox.hidden = true;
    form.prepend(errorBox);

    const limit = Number(form.dataset.maxBytes) || 0;

    function showChosen() {
      chosen.replaceChildren(
        ...Array.from(input.files, (file) => {
          const problem = tooLarge(file, limit);
          const item = element("li", problem ? { class: "too-large", "data-testid": "chosen-too-large" } : {});
          item.append(element("span", {}, file.name), element("span", { class: "muted" }, humanBytes(file.size)));
          if (problem) item.append(element("span", { class: "chosen-problem" }, problem));
          return item;
        }),
      );
    }

    input.addEventListener("change", showChosen);
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => {
        if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
        event.preventDefault();
        zone.classList.add("is-dragover");
      });
    }
    zone.addEventListener("dragleave", (event) => {
      if (!zone.contains(event.relatedTarget)) zone.classList.remove("is-dragover");
    });
    zone.addEventListener("drop", (event) => {
      zone.classList.remove("is-dragover");
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      event.preventDefault();
      input.files = event.dataTransfer.files;
      showChosen();
    });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errorBox.hidden = true;
      const files = Array.from(input.files);
      let metadata;
      try {
        if (!files.length) throw new Error("Choose at least one image to upload.");
        metadata = metadataOf(form);
      } catch (error) {
        errorBox.textContent = error.message;
        errorBox.hidden = false;
        return;
      }
      const description = form.querySelector('[name="description"]').value;
      markBusy(form);
      report.hidden = false;
      const rows = files.map((file) => reportRow(file.name));
      list.replaceChildren(...rows.map((row) => row.element));
      // The outcome appears under the button; bring it into view wherever the button was.
      report.scrollIntoView({ block: "nearest" });
      const counts = { added: 0, duplicate: 0, failed: 0 };
      for (const [index, file] of files.entries()) {
        summary.textContent = `Uploading ${index + 1} of ${files.length}…`;
        const problem = tooLarge(file, limit);
        let outcome;
        if (problem) {
          outcome = { status: "failed", reason: problem };
        } else {
          rows[index].uploading();
          outcome = await uploadOne(file, description, metadata);
        }
        rows[index].finish(outcome);
        counts[outcome.status] += 1;
      }
      summary.textContent =
        `${counts.added} added, ${plural(counts.duplicate, "duplicate")}, ${counts.failed} failed.`;
      clearBusy();
      input.value = "";
      chosen.replaceChildren();
      summary.scrollIntoView({ block: "nearest" });
      if (counts.added) await refreshRecent();
    });
  }

  /* Search: one box takes words, an image (chosen, dropped or pasted) or both. The image/words slider and the
   * region picker appear as soon as the query has an image. A chosen file is drawn on a canvas: the pages' policy
   * loads images from the server only. */

  /** Whether a file may be an image the server reads (some systems give HEIC files no image type). */
  function isImageFile(file) {
    return file.type.startsWith("image/") || /\.(heic|heif|avif)$/i.test(file.name);
  }

  /** The middle square of a picture, drawn into a small canvas. */
  function drawSquare(canvas, bitmap) {
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (!bitmap) return;
    const side = Math.min(bitmap.width, bitmap.height);
    const [x, y] = [(bitmap.width - side) / 2, (bitmap.height - side) / 2];
    context.drawImage(bitmap, x, y, side, side, 0, 0, canvas.width, canvas.height);
  }

  function initSearch() {
    for (const form of document.querySelectorAll("[data-search-form]")) {
      const box = form.querySelector("[data-search-box]");
      const text = form.querySelector("[data-search-text]");
      const file = form.querySelector("[data-search-file]");
      const hint = form.querySelector(".search-box-hint");
      const hintText = "Words, an image (drop or paste it here), or both.";
      hint.textContent = hintText;
      text.placeholder = "Words, or paste an image";
      const chosen = form.querySelector("[data-chosen-image]");
      const chosenName = chosen.querySelector("[data-chosen-name]");
      const chosenPreview = chosen.querySelector("[data-chosen-preview]");
      const weight = form.querySelector("[data-weight]");
      const slider = form.querySelector("[data-weight-input]");
      const output = form.querySelector("[data-weight-output]");
      const region = regionPicker(form.querySelector("[data-region]"));
      let turn = 0; // a file chosen later wins over a slower decode of an earlier one

      const hasImage = () => file.files.length > 0 || form.querySelector("[data-kept-image]") !== null;
      const update = () => {
        weight.hidden = !(text.value.trim() && hasImage());
      };

      async function showChosen() {
        const picked = file.files[0];
        const mine = ++turn;
        hint.textContent = hintText;
        chosen.hidden = !picked;
        if (!picked) {
          region.clear(hasImage());
          update();
          return;
        }
        for (const kept of form.querySelectorAll("[data-kept-image]")) kept.remove();
        chosenName.textContent = picked.name;
        chosenName.title = picked.name;
        update();
        const bitmap = await createImageBitmap(picked).catch(() => null);
        if (mine !== turn) return;
        drawSquare(chosenPreview, bitmap);
        region.useImage(bitmap);
      }

      /** Put the first image of dropped or pasted files in the box; false when there is none. */
      function take(files) {
        const image = Array.from(files || []).find(isImageFile);
        if (!image) return false;
        const transfer = new DataTransfer();
        transfer.items.add(image);
        file.files = transfer.files;
        showChosen();
        text.focus();
        return true;
      }

      const carriesFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
      for (const type of ["dragenter", "dragover"]) {
        form.addEventListener(type, (event) => {
          if (!carriesFiles(event)) return;
          event.preventDefault();
          box.classList.add("is-dragover");
        });
      }
      form.addEventListener("dragleave", (event) => {
        if (!form.contains(event.relatedTarget)) box.classList.remove("is-dragover");
      });
      form.addEventListener("drop", (event) => {
        box.classList.remove("is-dragover");
        if (!event.dataTransfer || !event.dataTransfer.files.length) return;
        event.preventDefault(); // a file dropped and not taken would make the browser leave the page for it
        if (!take(event.dataTransfer.files)) {
          hint.textContent = "That is not an image: drop a JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC or AVIF file.";
        }
      });
      // Pasting an image anywhere but in another form (the upload form on the home page) searches with it.
      document.addEventListener("paste", (event) => {
        const other = event.target instanceof Element ? event.target.closest("form") : null;
        if ((other && other !== form) || !event.clipboardData) return;
        if (take(event.clipboardData.files)) event.preventDefault();
      });

      text.addEventListener("input", update);
      file.addEventListener("change", showChosen);
      slider.addEventListener("input", () => {
        const percent = Math.round(Number(slider.value) * 100);
        output.textContent = `${percent}% image, ${100 - percent}% words`;
      });
      form.addEventListener("click", (event) => {
        const clearKept = event.target.closest("[data-clear-kept-image]");
        const clearChosen = event.target.closest("[data-clear-chosen-image]");
        if (clearKept) {
          event.preventDefault();
          clearKept.closest("[data-kept-image]").remove();
          region.clear(hasImage());
        } else if (clearChosen) {
          file.value = "";
          showChosen();
        } else {
          return;
        }
        update();
        text.focus();
      });
      if (file.files.length) showChosen(); // a file the browser kept when coming back to the page
      update();
    }
  }

  /* Search: rows of terms and of filters that can be added and removed (without the script, one empty row
   * of each is always there, so a term or filter can still be added per search). */

  function initRepeatable(scope, names) {
    for (const fieldset of document.querySelectorAll(scope)) {
      const rows = fieldset.querySelector(`[data-${names.rows}]`);
      const template = fieldset.querySelector(`[data-${names.template}]`);
      const addButton = fieldset.querySelector(`[data-${names.add}]`);
      const enable = (row) => {
        row.querySelector(`[data-${names.remove}]`).hidden = false;
      };
      rows.querySelectorAll(`[data-${names.row}]`).forEach(enable);
      addButton.hidden = false;
      addButton.addEventListener("click", () => {
        const row = template.content.querySelector(`[data-${names.row}]`).cloneNode(true);
        enable(row);
        rows.append(row);
        row.querySelector("input:not([type=hidden])").focus();
      });
      rows.addEventListener("click", (event) => {
        const button = event.target.closest(`[data-${names.remove}]`);
        if (!button) return;
        const row = button.closest(`[data-${names.row}]`);
        const neighbour = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        const next = neighbour ? neighbour.querySelector("input:not([type=hidden])") : null;
        (next || addButton).focus();
      });
    }
  }

  /* Search: drag a rectangle over the query image to search with that part only. The four number fields
   * are the source of truth (and the keyboard's way to set it); the rectangle shows them. The picture is the
   * kept query image, or the file just chosen, drawn on the picker's canvas. */

  const REGION_PICTURE_SIZE = 384;

  function regionPicker(fieldset) {
    const picker = fieldset.querySelector("[data-region-picker]");
    const canvas = picker.querySelector("[data-region-canvas]");
    const box = picker.querySelector("[data-region-box]");
    const inputs = ["left", "top", "right", "bottom"].map((side) => fieldset.querySelector(`[data-region-${side}]`));
    const clearButton = fieldset.querySelector("[data-region-clear]");
    const clamp = (value) => Math.min(1, Math.max(0, value));
    const picture = () => Array.from(picker.querySelectorAll("[data-region-image]")).find((node) => !node.hidden);
    let start = null;

    function draw() {
      const [left, top, right, bottom] = inputs.map((input) => (input.value.trim() === "" ? NaN : Number(input.value)));
      const valid = [left, top, right, bottom].every(Number.isFinite) && left < right && top < bottom;
      box.hidden = !valid;
      if (!valid) return;
      box.style.left = `${left * 100}%`;
      box.style.top = `${top * 100}%`;
      box.style.width = `${(right - left) * 100}%`;
      box.style.height = `${(bottom - top) * 100}%`;
    }

    function point(event) {
      const rect = picture().getBoundingClientRect();
      return [clamp((event.clientX - rect.left) / rect.width), clamp((event.clientY - rect.top) / rect.height)];
    }

    function select(from, to) {
      const values = [
        Math.min(from[0], to[0]),
        Math.min(from[1], to[1]),
        Math.max(from[0], to[0]),
        Math.max(from[1], to[1]),
      ].map((value) => Math.round(value * 100) / 100);
      if (values[2] - values[0] < 0.01 || values[3] - values[1] < 0.01) return;
      values.forEach((value, index) => {
        inputs[index].value = String(value);
      });
      draw();
    }

    function forget() {
      for (const input of inputs) input.value = "";
      draw();
    }

    picker.addEventListener("pointerdown", (event) => {
      if (!picture()) return;
      event.preventDefault();
      start = point(event);
      picker.setPointerCapture(event.pointerId);
    });
    picker.addEventListener("pointermove", (event) => {
      if (start) select(start, point(event));
    });
    picker.addEventListener("pointerup", (event) => {
      if (!start) return;
      select(start, point(event));
      start = null;
    });
    for (const input of inputs) input.addEventListener("input", draw);
    clearButton.hidden = false;
    clearButton.addEventListener("click", forget);
    draw();

    return {
      /** A newly chosen image: its own picture (none when the browser cannot decode it) and no region yet. */
      useImage(bitmap) {
        for (const kept of picker.querySelectorAll("img[data-region-image]")) kept.remove();
        if (bitmap) {
          const scale = Math.min(1, REGION_PICTURE_SIZE / Math.max(bitmap.width, bitmap.height));
          canvas.width = Math.max(1, Math.round(bitmap.width * scale));
          canvas.height = Math.max(1, Math.round(bitmap.height * scale));
          canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
        }
        canvas.hidden = !bitmap;
        picker.hidden = !bitmap;
        fieldset.hidden = false;
        forget();
      },
      /** The image was removed: no region; the fieldset stays only for an image still in the query. */
      clear(imageLeft) {
        fieldset.hidden = !imageLeft;
        forget();
      },
    };
  }

  /* Batch upload: poll the job and show its progress and report as it grows. */

  function jobItem(item) {
    const row = element("li", { "data-testid": `job-item-${item.status}` });
    row.append(element("span", { class: "report-name" }, item.filename));
    if (item.id) {
      row.append(element("a", { href: `/images/${encodeURIComponent(item.id)}` }, item.status === "added" ? "Open" : "Stored image"));
    }
    if (item.reason) row.append(element("span", { class: "report-detail" }, item.reason));
    return row;
  }

  function jobSummary(job) {
    const counts = `${job.added} added, ${plural(job.duplicates, "duplicate")}, ${job.failed} failed.`;
    if (job.state === "done") return `Finished: ${counts}`;
    return `Stopped (${job.state}) after ${job.done} of ${job.total} files: ${counts}`;
  }

  function initJob() {
    const panel = document.querySelector("[data-job]");
    if (!panel || panel.dataset.jobState !== "running") return;
    const report = panel.querySelector("[data-job-report]");
    const progress = panel.querySelector("[data-job-progress]");
    const stateLabel = panel.querySelector("[data-job-state-label]");
    const message = panel.querySelector("[data-job-message]");
    const summary = panel.querySelector("[data-job-summary]");
    let shown = Number(report.dataset.itemsShown);
    let failures = 0;

    function show(job) {
      progress.max = job.total || 1;
      progress.value = job.total ? job.done : 1;
      progress.textContent = `${job.done} of ${job.total}`;
      for (const node of panel.querySelectorAll("[data-count]")) {
        node.textContent = String(job[node.dataset.count]);
      }
      for (const item of job.items.slice(shown)) {
        const list = report.querySelector(`[data-job-items="${item.status}"]`);
        if (list) list.append(jobItem(item));
      }
      shown = job.items.length;
      const row = document.querySelector(`[data-job-row="${CSS.escape(job.id)}"]`);
      for (const cell of row ? row.querySelectorAll("[data-job-cell]") : []) {
        cell.textContent = String(job[cell.dataset.jobCell]);
      }
      for (const label of [stateLabel, row && row.querySelector('[data-job-cell="state"]')]) {
        if (!label) continue;
        label.textContent = job.state;
        label.className = `badge badge-job-${job.state}`;
      }
      message.textContent = job.message;
      message.hidden = !job.message;
    }

    function finish(job) {
      panel.dataset.jobState = job.state;
      summary.textContent = jobSummary(job);
      summary.className = `notice notice-${job.state === "done" ? "success" : "warning"}`;
      summary.hidden = false;
      document.querySelector("[data-start-form]").hidden = false;
      document.querySelector("[data-job-running-note]").hidden = true;
    }

    async function poll() {
      let job;
      try {
        const response = await fetch(`/api/v1/jobs/${encodeURIComponent(panel.dataset.jobId)}`, {
          headers: { Accept: "application/json" },
        });
        if (!response.ok) throw new Error(String(response.status));
        job = await response.json();
        failures = 0;
      } catch {
        failures += 1;
        message.textContent = "Lost contact with the server; retrying…";
        message.hidden = false;
        window.setTimeout(poll, Math.min(10000, 1000 * 2 ** failures));
        return;
      }
      show(job);
      if (job.state === "running") {
        window.setTimeout(poll, 600);
      } else {
        finish(job);
      }
    }

    window.setTimeout(poll, 300);
  }

  /* Banners: a dismissed one stays hidden for the rest of this browser session (sessionStorage, by its text, so a
   * new warning still shows); without the script, or without storage, they stay. */

  const DISMISSED_BANNERS = "imagematch.dismissed-banners";

  function dismissedBanners() {
    try {
      const stored = JSON.parse(window.sessionStorage.getItem(DISMISSED_BANNERS) || "[]");
      return new Set(Array.isArray(stored) ? stored : []);
    } catch {
      return new Set();
    }
  }

  function initBanners() {
    const area = document.querySelector("[data-banners]");
    if (!area) return;
    const dismissed = dismissedBanners();
    const banners = Array.from(area.querySelectorAll("[data-banner]"));
    const tidy = () => {
      area.hidden = banners.every((banner) => banner.hidden);
    };
    for (const banner of banners) {
      banner.hidden = dismissed.has(banner.dataset.banner);
      const button = banner.querySelector("[data-dismiss-banner]");
      button.hidden = false;
      button.addEventListener("click", () => {
        dismissed.add(banner.dataset.banner);
        try {
          window.sessionStorage.setItem(DISMISSED_BANNERS, JSON.stringify([...dismissed]));
        } catch {
          // storage refused (a private window's quota): hidden on this page only
        }
        banner.hidden = true;
        tidy();
        document.getElementById("main").focus();
      });
    }
    tidy();
  }

  /* Image page: outline each line of text read in the picture over the picture, where the reader found it. */
  function initTextBoxes() {
    const image = document.querySelector("[data-testid=image-full]");
    const lines = Array.from(document.querySelectorAll("[data-text-lines] [data-box]"));
    if (!image || !lines.length) return;
    const frame = image.parentElement;
    const boxes = lines.map((line) => {
      const box = element("span", { class: "text-box", "data-testid": "text-box", title: line.textContent });
      frame.appendChild(box);
      return { box, edges: line.dataset.box.split(",").map(Number) };
    });
    function place() {
      if (!image.naturalWidth) return;
      // The picture is drawn contained in the element's box: work out where its pixels are.
      const scale = Math.min(image.clientWidth / image.naturalWidth, image.clientHeight / image.naturalHeight);
      const width = image.naturalWidth * scale;
      const height = image.naturalHeight * scale;
      const left = image.offsetLeft + (image.clientWidth - width) / 2;
      const top = image.offsetTop + (image.clientHeight - height) / 2;
      for (const { box, edges } of boxes) {
        box.style.left = `${left + edges[0] * width}px`;
        box.style.top = `${top + edges[1] * height}px`;
        box.style.width = `${(edges[2] - edges[0]) * width}px`;
        box.style.height = `${(edges[3] - edges[1]) * height}px`;
      }
    }
    if (image.complete) place();
    image.addEventListener("load", place);
    window.addEventListener("resize", place);
  }

  initBanners();
  initBusyForms();
  initTextBoxes();
  initMetadataFields();
  initUpload();
  initSearch();
  initRepeatable("[data-terms]", {
    rows: "term-rows",
    row: "term-row",
    template: "term-template",
    add: "add-term",
    remove: "remove-term",
  });
  initRepeatable("[data-filters]", {
    rows: "filter-rows",
    row: "filter-row",
    template: "filter-template",
    add: "add-filter",
    remove: "remove-filter",
  });
  initJob();
})();
