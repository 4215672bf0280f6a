// A CSV with a header row, parsed in the browser: comma-separated, with "quoted" cells.

function cells(line) {
  const out = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      out.push(cell.trim());
      cell = "";
    } else cell += c;
  }
  out.push(cell.trim());
  return out;
}

/** {header, rows} of the text; throws an Error naming the first malformed line. */
export function parseCsv(text) {
  const lines = text.split(/\r?\n/).filter((line) => line.trim().length > 0);
  if (lines.length < 2) throw new Error("the CSV needs a header row and at least one data row");
  const header = cells(lines[0]);
  const rows = lines.slice(1).map((line, i) => {
    const row = cells(line);
    if (row.length !== header.length) {
      throw new Error(`line ${i + 2} has ${row.length} cells, the header ${header.length}`);
    }
    return row;
  });
  return { header, rows };
}

/** Whether every cell of a column is a finite number. */
export function isNumeric(rows, column) {
  return rows.every((row) => row[column] !== "" && Number.isFinite(Number(row[column])));
}
