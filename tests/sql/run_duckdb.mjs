// Runs the named queries of a .sql file (tests/sql/fleet_view.sql) in DuckDB through
// @duckdb/node-api and prints {name: rows} as JSON: node run_duckdb.mjs FILE.sql ROOT
import { readFileSync } from 'node:fs';
import { DuckDBInstance } from '@duckdb/node-api';

const [file, root] = process.argv.slice(2);
const text = readFileSync(file, 'utf8').replaceAll('{{root}}', root);
const instance = await DuckDBInstance.create(':memory:');
const conn = await instance.connect();
const out = {};
for (const part of text.split(/^-- name: /m).slice(1)) {
  const name = part.slice(0, part.indexOf('\n')).trim();
  const reader = await conn.runAndReadAll(part.slice(part.indexOf('\n') + 1));
  out[name] = reader.getRowObjectsJson();
}
process.stdout.write(JSON.stringify(out) + '\n');
