'use strict'
// Server of the connect benchmarks (tests/src/bin/bench_connect.rs), MIT OR Apache-2.0.
//
//   HYPERDHT_BOOTSTRAP=127.0.0.1:PORT,... node tests/js/bench-server.js SEED_HEX PORT
//
// One HyperDHT node bound on 127.0.0.1 (server socket on PORT) and one server
// (`dht.createServer`) listening on the key pair of the 32-byte SEED_HEX, like the guide's chat
// server but without the terminal: every connection's errors are ignored and its data
// discarded. Prints `listening on: <KEY hex> at 127.0.0.1:<PORT>` once announced.
//
// A `stats` line on stdin is answered with one line:
//   stats connections=N opened=N rss=B heapUsed=B external=B
// (`connections` counts the server's 'connection' events, `opened` the streams that emitted
// 'open': path chosen and secret stream set up; JS does not wait for the client's
// secret-stream header). Exits when stdin closes.

const HyperDHT = require('hyperdht')
const b4a = require('b4a')
const readline = require('readline')

const seed = process.argv[2]
const port = Number(process.argv[3])
if (!/^[0-9a-fA-F]{64}$/.test(seed || '') || !Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: HYPERDHT_BOOTSTRAP=host:port,... node bench-server.js SEED_HEX PORT')
  process.exit(2)
}
const bootstrap = process.env.HYPERDHT_BOOTSTRAP ? process.env.HYPERDHT_BOOTSTRAP.split(',') : undefined
const dht = new HyperDHT({ bootstrap, host: '127.0.0.1', port, anyPort: false })
const keyPair = HyperDHT.keyPair(b4a.from(seed, 'hex'))

let connections = 0
let opened = 0
const noop = () => {}

const server = dht.createServer((conn) => {
  connections++
  conn.on('error', noop)
  conn.on('open', () => { opened++ })
  conn.resume()
})

server.listen(keyPair).then(() => {
  const a = dht.address()
  process.stdout.write(`listening on: ${b4a.toString(keyPair.publicKey, 'hex')} at ${a.host}:${a.port}\n`)
}, (err) => {
  console.error('bench-server: cannot listen:', err)
  process.exit(1)
})

let closing = false
async function close () {
  if (closing) return
  closing = true
  try {
    await dht.destroy({ force: true })
  } finally {
    process.exit(0)
  }
}

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (line.trim() !== 'stats') return
  const m = process.memoryUsage()
  process.stdout.write(`stats connections=${connections} opened=${opened} rss=${m.rss} heapUsed=${m.heapUsed} external=${m.external}\n`)
})
lines.on('close', close)
process.stdin.on('error', close)
process.on('SIGTERM', close)
process.on('SIGINT', close)
