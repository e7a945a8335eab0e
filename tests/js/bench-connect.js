'use strict'
// Client of the connect benchmarks (tests/src/bin/bench_connect.rs), MIT OR Apache-2.0.
//
//   HYPERDHT_BOOTSTRAP=127.0.0.1:PORT,... node tests/js/bench-connect.js
//
// One HyperDHT node on 127.0.0.1; prints `ready` once bootstrapped. Then, for every line
// `connect <KEY hex>` on stdin, one connection attempt with a fresh key pair:
// `dht.connect(key)` until the socket's 'open' event, printed as `open <milliseconds>`, or
// `error <code> <milliseconds>`. 'open' fires once the path is chosen and the secret stream is
// set up from the finished Noise handshake (it does not wait for the server's secret-stream
// header, which a Rust `MioNode::connect` does). The socket is destroyed right after. Exits
// when stdin closes.

const HyperDHT = require('hyperdht')
const b4a = require('b4a')
const readline = require('readline')
const { performance } = require('perf_hooks')

const bootstrap = process.env.HYPERDHT_BOOTSTRAP ? process.env.HYPERDHT_BOOTSTRAP.split(',') : undefined
const dht = new HyperDHT({ bootstrap, host: '127.0.0.1' })

function attempt (key) {
  const t0 = performance.now()
  let done = false
  const socket = dht.connect(b4a.from(key, 'hex'), { keyPair: HyperDHT.keyPair() })
  socket.once('open', () => {
    if (done) return
    done = true
    process.stdout.write(`open ${(performance.now() - t0).toFixed(3)}\n`)
    socket.destroy()
  })
  socket.on('error', (err) => {
    if (done) return
    done = true
    process.stdout.write(`error ${err.code || err.message} ${(performance.now() - t0).toFixed(3)}\n`)
  })
}

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

dht.ready().then(() => process.stdout.write('ready\n'), (err) => {
  console.error('bench-connect: cannot start:', err)
  process.exit(1)
})

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const [cmd, key] = line.trim().split(/\s+/)
  if (cmd === 'connect' && /^[0-9a-fA-F]{64}$/.test(key || '')) attempt(key)
})
lines.on('close', close)
process.stdin.on('error', close)
process.on('SIGTERM', close)
process.on('SIGINT', close)
