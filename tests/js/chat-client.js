'use strict'
// The client of Pear's "connect two peers" guide, with a local bootstrap list
// (HYPERDHT_BOOTSTRAP=host:port,...) and host 127.0.0.1 so it works on one machine
// (CHAT_HOST=0.0.0.0 binds every interface, e.g. inside a network namespace).
// MIT OR Apache-2.0.
const HyperDHT = require('hyperdht')
const b4a = require('b4a')

const key = process.argv[2]
console.log('Connecting to:', key)
const bootstrap = process.env.HYPERDHT_BOOTSTRAP ? process.env.HYPERDHT_BOOTSTRAP.split(',') : undefined
const dht = new HyperDHT({ bootstrap, host: process.env.CHAT_HOST || '127.0.0.1' })
const conn = dht.connect(b4a.from(key, 'hex'))
conn.once('open', () => console.log('got connection!'))
conn.on('error', (err) => {
  console.error('connection error:', err.code || err.message)
  process.exit(1)
})
process.stdin.pipe(conn).pipe(process.stdout)
