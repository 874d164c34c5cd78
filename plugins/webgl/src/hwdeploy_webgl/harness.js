// The page hwdeploy drives: loads a Paddle.js model and runs it on tensors sent as base64 float32.
(function () {
    'use strict';
    const SOFTWARE = /SwiftShader|llvmpipe|softpipe|Software|Basic Render|Microsoft Basic/i;

    function b64ToFloat32(b64) {
        const bin = atob(b64);
        const bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) {
            bytes[i] = bin.charCodeAt(i);
        }
        return new Float32Array(bytes.buffer);
    }

    function float32ToB64(values) {
        const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
        let bin = '';
        for (let i = 0; i < bytes.length; i += 0x8000) {
            bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
        }
        return btoa(bin);
    }

    function glInfo(gl, probeFramebuffer) {
        if (!gl) {
            return { webgl2: false };
        }
        const debug = gl.getExtension('WEBGL_debug_renderer_info');
        const info = {
            webgl2: typeof WebGL2RenderingContext !== 'undefined' && gl instanceof WebGL2RenderingContext,
            renderer: debug ? gl.getParameter(debug.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER),
            vendor: debug ? gl.getParameter(debug.UNMASKED_VENDOR_WEBGL) : gl.getParameter(gl.VENDOR),
            version: gl.getParameter(gl.VERSION),
            shading_language: gl.getParameter(gl.SHADING_LANGUAGE_VERSION),
            max_texture_size: gl.getParameter(gl.MAX_TEXTURE_SIZE),
            color_buffer_float: !!gl.getExtension('EXT_color_buffer_float'),
            fence_sync: typeof gl.fenceSync === 'function'
        };
        info.software = SOFTWARE.test(info.renderer || '');
        // Float textures as Paddle.js uses them: an RGBA32F framebuffer must be complete.
        if (!probeFramebuffer) {
            return info;
        }
        if (info.webgl2 && info.color_buffer_float) {
            const tex = gl.createTexture();
            gl.bindTexture(gl.TEXTURE_2D, tex);
            gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, 1, 1, 0, gl.RGBA, gl.FLOAT, null);
            const fb = gl.createFramebuffer();
            gl.bindFramebuffer(gl.FRAMEBUFFER, fb);
            gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, tex, 0);
            info.float_framebuffer = gl.checkFramebufferStatus(gl.FRAMEBUFFER) === gl.FRAMEBUFFER_COMPLETE;
            gl.bindFramebuffer(gl.FRAMEBUFFER, null);
            gl.deleteFramebuffer(fb);
            gl.deleteTexture(tex);
        }
        else {
            info.float_framebuffer = false;
        }
        return info;
    }

    let runner = null;

    window.hwdeploy = {
        probe() {
            return glInfo(document.createElement('canvas').getContext('webgl2'), true);
        },

        async init(modelPath) {
            if (!window.paddlejs || !paddlejs.core || !paddlejs.webglBackend) {
                throw new Error('Paddle.js bundles did not load');
            }
            const backend = paddlejs.webglBackend.glInstance;
            // No preheat run (a full inference on ones): the first predict uploads the weights instead.
            runner = new paddlejs.core.Runner({ modelPath, needPreheat: false });
            const t0 = performance.now();
            await runner.init();  // GL context, weights, one shader program per op
            const loadMs = performance.now() - t0;
            const gl = backend.gl;
            if (!gl) {
                throw new Error('Paddle.js could not create a WebGL context');
            }
            // Paddle.js only logs shader errors: check every op's program ourselves.
            const ops = [];
            const broken = [];
            for (const op of runner.weightMap) {
                if (!op.opData) {
                    continue;
                }
                ops.push(op.opData.name);
                for (const prog of op.opData.program || []) {
                    if (!prog || !prog.program || !gl.getProgramParameter(prog.program, gl.LINK_STATUS)) {
                        broken.push(op.opData.name);
                    }
                }
            }
            // Read-only queries on Paddle.js' own context (its framebuffer binding must stay untouched);
            // the float render-target check runs on a throwaway context of the same browser.
            const info = glInfo(gl, false);
            info.float_framebuffer = glInfo(document.createElement('canvas').getContext('webgl2'), true)
                .float_framebuffer;
            return { gl: info, ops, broken, gl_error: gl.getError(), context_lost: gl.isContextLost(), load_ms: loadMs };
        },

        async predict(b64, shape) {
            const data = b64ToFloat32(b64);
            const out = await runner.predictWithFeed([{ data, shape, name: 'image' }]);
            const gl = paddlejs.webglBackend.glInstance.gl;
            if (gl.isContextLost()) {
                throw new Error('the WebGL context was lost');
            }
            return float32ToB64(Float32Array.from(out));
        }
    };
    document.title = 'hwdeploy-ready';
})();
