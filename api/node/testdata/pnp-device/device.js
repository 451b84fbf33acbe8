// An IoT Plug and Play device written with the Azure IoT device SDK for
// Node.js, announcing its model with the SDK's modelId option (which puts
// model-id in the MQTT user name). Driven by TestModelsThroughTheBinary:
// it prints one JSON line per outcome and runs until its stdin closes.
//
// Environment: CONN (device connection string), MODEL_ID.
'use strict';
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

function update(twin, patch) {
  return new Promise((resolve) => {
    twin.properties.reported.update(patch, (err) => {
      resolve(err ? { ok: false, error: String(err && err.message), name: err.constructor && err.constructor.name,
        status: err.response && err.response.statusCode } : { ok: true });
    });
  });
}

async function main() {
  const client = Client.fromConnectionString(process.env.CONN, Mqtt);
  await client.setOptions({ modelId: process.env.MODEL_ID });
  await client.open();
  out({ step: 'open' });
  await client.sendEvent(new Message(JSON.stringify({ temperature: 21.5, state: 'heating' })));
  out({ step: 'telemetry', ok: true });
  const twin = await client.getTwin();
  out(Object.assign({ step: 'reported-valid' }, await update(twin, { serialNumber: 'SN-1', targetTemperature: { value: 20, ac: 200, av: 1 } })));
  out(Object.assign({ step: 'reported-invalid' }, await update(twin, { enabled: 'yes' })));
  twin.on('properties.desired', (delta) => out({ step: 'desired', delta }));
  client.onDeviceMethod('reboot', (req, res) => {
    out({ step: 'method', name: req.methodName, payload: req.payload });
    res.send(200, { rebooted: true }, () => {});
  });
  out({ step: 'ready' });
  process.stdin.resume();
  process.stdin.on('end', async () => {
    await client.close();
    out({ step: 'closed' });
    process.exit(0);
  });
}

main().catch((err) => {
  out({ step: 'fatal', error: String(err && err.stack || err) });
  process.exit(1);
});
