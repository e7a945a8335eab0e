'use strict'
// JS target node of the request-rate benchmark (tests/src/bin/bench_dht.rs), MIT OR Apache-2.0.
//
//   node tests/js/bench-node.js PORT
//
// Runs `HyperDHT.bootstrapper(PORT, '127.0.0.1')`: a persistent first node of a new network,
// bound on 127.0.0.1 only. Prints `ready 127.0.0.1:PORT id <hex>` on stdout once listening,
// then serves until stdin closes (the benchmark exiting or dying) or SIGTERM/SIGINT.

const DHT = require('hyperdht')
const b4a = require('b4a')

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

process.stdin.on('end', () => close(0))
process.stdin.on('error', () => close(0))
process.stdin.resume()
process.on('SIGTERM', () => close(0))
process.on('SIGINT', () => close(0))
