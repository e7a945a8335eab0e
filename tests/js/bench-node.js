'use strict'
// JS target node of the request-rate benchmark (tests/src/bin/bench_dht.rs), MIT OR Apache-2.0.
//
//   node tests/js/bench-node.js PORT
//
// Runs `HyperDHT.bootstrapper(PORT, '127.0.0.1')`: a persistent first node of a new network,
// bound on 127.0.0.1 only. Prints `ready 127.0.0.1:PORT id <hex>` on stdout once listening,
// then serves until stdin closes (the benchmark exiting or dying) or SIGTERM/SIGINT.
//
// A `stats` line on stdin is answered with one line on stdout:
//   stats records=N fresh=N stale=N rss=B heapUsed=B external=B arrayBuffers=B gc=0|1
// after two full garbage collections if `gc()` is exposed (`node --expose-gc`).

const DHT = require('hyperdht')
const b4a = require('b4a')
const readline = require('readline')

const HOST = '127.0.0.1'
const port = Number(process.argv[2])
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node bench-node.js PORT')
  process.exit(2)
}

const node = DHT.bootstrapper(port, HOST, { host: HOST })
let closing = false

async function close (code) {
  if (closing) return
  closing = true
  try {
    await node.destroy()
  } finally {
    process.exit(code)
  }
}

node.ready().then(() => {
  const addr = node.address()
  process.stdout.write(`ready ${addr.host}:${addr.port} id ${b4a.toString(node.id, 'hex')}\n`)
}, (err) => {
  console.error('bench-node: cannot start:', err)
  process.exit(1)
})

function stats () {
  const hasGc = typeof global.gc === 'function'
  if (hasGc) {
    global.gc()
    global.gc()
  }
  const m = process.memoryUsage()
  const records = node._persistent ? node._persistent.records : null
  const n = (s) => (records ? records[s].size : -1)
  process.stdout.write(
    `stats records=${records ? records.size : -1} fresh=${n('_fresh')} stale=${n('_stale')} ` +
    `rss=${m.rss} heapUsed=${m.heapUsed} external=${m.external} ` +
    `arrayBuffers=${m.arrayBuffers} gc=${hasGc ? 1 : 0}\n`
  )
}

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (line.trim() === 'stats') stats()
})
lines.on('close', () => close(0))
process.stdin.on('error', () => close(0))
process.on('SIGTERM', () => close(0))
process.on('SIGINT', () => close(0))
