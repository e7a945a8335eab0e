'use strict'
// Writes every byte vector of tests/vectors/ from the npm packages pinned in ../package.json:
//
//   npm run vectors                     (in tests/js: rewrites ../vectors/*.json)
//   node vectors/index.js --out DIR     (writes DIR/*.json instead)
//
// Each generator runs in its own process (they patch randomness, and wire/relay bind the same
// fixed ports on 127.0.0.2), one after the other. tests/tests/vectors_fresh.rs runs this into a
// temporary directory and compares the output with the committed files.
const { execFileSync } = require('child_process')
const fs = require('fs')
const path = require('path')

const GENERATORS = ['compact', 'ids', 'records', 'wire', 'relay', 'noise', 'holepunch', 'secretstream', 'udx']

const args = process.argv.slice(2)
const at = args.indexOf('--out')
const out = at >= 0 ? path.resolve(args[at + 1]) : path.join(__dirname, '..', '..', 'vectors')
fs.mkdirSync(out, { recursive: true })

for (const name of GENERATORS) {
  const json = execFileSync(process.execPath, [path.join(__dirname, name + '.js')], {
    cwd: path.join(__dirname, '..'),
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 60000
  })
  JSON.parse(json) // a generator prints exactly one JSON document
  fs.writeFileSync(path.join(out, name + '.json'), json)
  console.error('wrote ' + path.join(out, name + '.json'))
}
