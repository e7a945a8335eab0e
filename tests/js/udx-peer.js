// One UDX stream end for the Rust interop tests and benchmarks: the real udx-native (and,
// with mode "secret", the real @hyperswarm/secret-stream over it).
//
// Protocol (newline-delimited JSON):
//   stdout: {"port": N}                          once the socket is bound on 127.0.0.1
//   stdin:  {"localId", "remoteId", "remotePort", "send", "sendSeed", "recvSeed",
//            "mode": "raw" | "secret", "initiator", "tx", "rx", "hash", "destroyAfter"}
//   stdout: {"result": {...}}                    when the stream closed
//
// Data is the xorshift32 pattern of tests/src/udx_driver.rs (`Pattern`): four little-endian
// bytes per step. Received bytes are checked against the expected pattern as they arrive.

const UDX = require('udx-native')
const NoiseSecretStream = require('@hyperswarm/secret-stream')
const readline = require('readline')

class Pattern {
  constructor (seed) {
    this.x = (seed >>> 0) || 1
    this.word = Buffer.alloc(4)
    this.pos = 4
  }

  next () {
    let x = this.x
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    this.x = x
    return x
  }

  fill (out) {
    let i = 0
    const n = out.length
    while (i < n) {
      if (this.pos === 4) {
        if (n - i >= 4) {
          out.writeUInt32LE(this.next(), i)
          i += 4
          continue
        }
        this.word.writeUInt32LE(this.next(), 0)
        this.pos = 0
      }
      out[i++] = this.word[this.pos++]
    }
  }
}

const udx = new UDX()
const socket = udx.createSocket()
socket.bind(0, '127.0.0.1')
process.stdout.write(JSON.stringify({ port: socket.address().port }) + '\n')

const rl = readline.createInterface({ input: process.stdin })
rl.once('line', (line) => run(JSON.parse(line)))

function run (cfg) {
  const raw = udx.createStream(cfg.localId)
  raw.connect(socket, cfg.remoteId, cfg.remotePort, '127.0.0.1')

  let s = raw
  if (cfg.mode === 'secret') {
    s = new NoiseSecretStream(cfg.initiator, raw, {
      handshake: {
        tx: Buffer.from(cfg.tx, 'hex'),
        rx: Buffer.from(cfg.rx, 'hex'),
        hash: Buffer.from(cfg.hash, 'hex'),
        publicKey: Buffer.alloc(32),
        remotePublicKey: Buffer.alloc(32)
      },
      keepAlive: 5000
    })
  }

  const started = process.hrtime.bigint()
  const cpu0 = process.cpuUsage()
  const expect = new Pattern(cfg.recvSeed)
  let received = 0
  let mismatch = -1
  let ended = false
  let error = null
  let destroyed = false
  let scratch = Buffer.alloc(0)

  s.on('data', (data) => {
    if (scratch.length < data.length) scratch = Buffer.alloc(data.length)
    const want = scratch.subarray(0, data.length)
    expect.fill(want)
    if (mismatch < 0 && !want.equals(data)) {
      for (let i = 0; i < data.length; i++) {
        if (data[i] !== want[i]) { mismatch = received + i; break }
      }
    }
    received += data.length
    if (cfg.destroyAfter && !destroyed && received >= cfg.destroyAfter) {
      destroyed = true
      s.destroy()
    }
  })
  s.on('end', () => { ended = true })
  s.on('error', (err) => { error = err.code || err.message })
  s.on('close', () => {
    const elapsed = Number(process.hrtime.bigint() - started) / 1e9
    const cpu = process.cpuUsage(cpu0)
    const result = {
      received,
      mismatch,
      ended,
      error,
      destroyed,
      sent: written,
      seconds: elapsed,
      cpuSeconds: (cpu.user + cpu.system) / 1e6
    }
    process.stdout.write(JSON.stringify({ result }) + '\n')
    socket.close().then(() => process.exit(0), () => process.exit(0))
  })

  const send = new Pattern(cfg.sendSeed)
  const CHUNK = 65536
  let written = 0

  function writeMore () {
    while (written < cfg.send && !s.destroying) {
      const n = Math.min(CHUNK, cfg.send - written)
      const chunk = Buffer.allocUnsafe(n)
      send.fill(chunk)
      written += n
      if (!s.write(chunk)) {
        s.once('drain', writeMore)
        return
      }
    }
    if (!s.destroying) s.end()
  }
  writeMore()
}
