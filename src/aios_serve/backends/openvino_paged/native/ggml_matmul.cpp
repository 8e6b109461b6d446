// GgmlMatMul: an OpenVINO operation that multiplies f32 activations by a weight held as a GGUF
// tensor's own blocks, with ggml's CPU kernels (those of the llama.cpp that llama-cpp-python
// built for this machine). Inputs: x f32 [..., columns]; blocks u8 [rows, row_bytes], the rows
// of the GGUF tensor. Output: f32 [..., rows] = x @ weight.T. ggml reads the blocks, the input
// and the output where OpenVINO holds them (no copies). The rows are split between the threads
// of OpenVINO's own pool (TBB), each part one single-threaded ggml computation, so no second
// pool of threads waits for work beside OpenVINO's.
//
// Where this CPU's ggml has an interleaved layout for the type (its CPU_REPACK buffers, as
// llama.cpp loads weights: Q4_K in 8-row groups on AVX2), the IR may hold the blocks already in
// that layout (`aios_ggml_repack` at build time; attribute `repacked`), and ggml multiplies them
// with that layout's kernels.
#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <ggml.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/op/op.hpp>
#include <stdexcept>
#include <vector>

namespace {

// What one thread keeps between calls: ggml's context memory, a thread pool of one (no OS
// threads: the calling thread computes) and the work buffer (the activations in the kernel's
// type).
struct ThreadState {
    std::vector<uint8_t> context_memory;
    std::vector<uint8_t> work;
    ggml_threadpool_t pool = nullptr;

    ThreadState() {
        static const bool ready = [] {
            ggml_cpu_init();
            return true;
        }();
        (void)ready;
        context_memory.resize(ggml_tensor_overhead() * 4 + ggml_graph_overhead_custom(4, false));
        ggml_threadpool_params params = ggml_threadpool_params_default(1);
        pool = ggml_threadpool_new(&params);
        if (!pool) throw std::runtime_error("GgmlMatMul: ggml's thread pool did not start");
    }
};

// ggml's CPU_REPACK buffer type (the interleaved layouts), or null where this build has none.
ggml_backend_buffer_type_t repack_buffer_type() {
    static const ggml_backend_buffer_type_t found = [] {
        ggml_cpu_init();
        ggml_backend_reg_t reg = ggml_backend_cpu_reg();
        auto extra_types = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
        for (auto* type = extra_types ? extra_types(ggml_backend_reg_dev_get(reg, 0)) : nullptr; type && *type; ++type)
            if (std::strcmp(ggml_backend_buft_name(*type), "CPU_REPACK") == 0) return *type;
        return ggml_backend_buffer_type_t{nullptr};
    }();
    return found;
}

// A repacked weight as ggml's kernels find it: the CPU_REPACK buffer it says it belongs to and
// the layout's kernels (`extra`); null where this CPU has no layout for the type and shape.
struct Layout {
    ggml_backend_buffer_t buffer = nullptr;
    void* extra = nullptr;
};

// The layout ggml gives a [rows, columns] tensor of `type` on this CPU. The buffer is a small one
// shared by all weights: ggml reads only its type and the kernels in `extra`, and the data stays
// where OpenVINO holds it.
Layout layout_of(ggml_type type, int64_t rows, int64_t columns) {
    static const ggml_backend_buffer_t shared = [] {
        ggml_backend_buffer_type_t type = repack_buffer_type();
        return type ? ggml_backend_buft_alloc_buffer(type, 64) : nullptr;
    }();
    if (!shared) return {};
    std::vector<uint8_t> memory(ggml_tensor_overhead() * 2);
    ggml_init_params params = {memory.size(), memory.data(), true};
    std::unique_ptr<ggml_context, decltype(&ggml_free)> context(ggml_init(params), ggml_free);
    ggml_tensor* tensor = ggml_new_tensor_2d(context.get(), type, columns, rows);
    tensor->buffer = shared;
    if (ggml_backend_buffer_init_tensor(shared, tensor) != GGML_STATUS_SUCCESS) return {};
    return tensor->extra ? Layout{shared, tensor->extra} : Layout{};
}

// ggml multiplies 8 or more activation rows at once with another kernel, which on a Zen 3 core
// took as long for 8 rows as for 16 (Qwen2.5-Coder-1.5B's 8,960 x 1,536 Q4_K weight: 0.52 ms for
// one row, 3.8 for 7, 6.6 for 8 and 16). Up to kWholeFromRows rows go in runs of at most
// kRowsPerRun; from there on, all at once.
constexpr int64_t kRowsPerRun = 7;
constexpr int64_t kWholeFromRows = 12;

// Each part of a product quantizes the whole input and plans a ggml graph of its own. Below
// kGemmFromRows activation rows (ggml's row-at-a-time kernels) that costs more than the balance
// of many parts buys: with one part per thread, Qwen2.5-Coder-1.5B's decode step took 0.94x the
// time of four for one sequence and 0.92x for three (2-core Zen 3; one process, both counts in
// turns, medians of 30 and 15 rounds). From there on a part's work outweighs its fixed cost.
constexpr int64_t kGemmFromRows = 4;
constexpr int64_t kPartsPerThread = 4;

// One single-threaded ggml computation of `product` (in `context`) on the thread's pool of one.
bool compute(ThreadState& state, ggml_context* context, ggml_tensor* product) {
    ggml_cgraph* graph = ggml_new_graph_custom(context, 4, false);
    ggml_build_forward_expand(graph, product);
    ggml_cplan plan = ggml_graph_plan(graph, 1, state.pool);
    if (state.work.size() < plan.work_size) state.work.resize(plan.work_size);
    plan.work_data = state.work.data();
    return ggml_graph_compute(graph, &plan) == GGML_STATUS_SUCCESS;
}

// y[i, first + r] = x[i, :] . weight[first + r, :] for r < count and i < m; y's rows are `stride`
// floats apart. A repacked weight's `first` is a multiple of its 8-row groups.
bool multiply(ggml_type type, const uint8_t* blocks, const Layout& layout, int64_t first, int64_t count,
              int64_t columns, const float* x, int64_t m, float* y, int64_t stride) {
    thread_local ThreadState state;
    const int64_t run = layout.extra || m >= kWholeFromRows ? m : std::min(m, kRowsPerRun);
    for (int64_t start = 0; start < m; start += run) {
        const int64_t rows = std::min(run, m - start);
        ggml_init_params params = {state.context_memory.size(), state.context_memory.data(), true};
        std::unique_ptr<ggml_context, decltype(&ggml_free)> context(ggml_init(params), ggml_free);
        ggml_tensor* weight = ggml_new_tensor_2d(context.get(), type, columns, count);
        weight->data = const_cast<uint8_t*>(blocks) + first * ggml_row_size(type, columns);
        weight->buffer = layout.buffer;
        weight->extra = layout.extra;
        ggml_tensor* input = ggml_new_tensor_2d(context.get(), GGML_TYPE_F32, columns, rows);
        input->data = const_cast<float*>(x + start * columns);
        ggml_tensor* product = ggml_mul_mat(context.get(), weight, input);
        product->data = y + start * stride + first;
        product->nb[1] = stride * sizeof(float);  // rows of the whole output, this part's columns
        product->nb[2] = product->nb[3] = product->nb[1] * rows;
        if (!compute(state, context.get(), product)) return false;
    }
    return true;
}

}  // namespace

class GgmlMatMul : public ov::op::Op {
public:
    OPENVINO_OP("GgmlMatMul", "aios");

    GgmlMatMul() = default;
    GgmlMatMul(const ov::Output<ov::Node>& x, const ov::Output<ov::Node>& blocks, int64_t ggml_type,
               int64_t rows, int64_t columns, int64_t repacked)
        : Op({x, blocks}), ggml_type_(ggml_type), rows_(rows), columns_(columns), repacked_(repacked) {
        constructor_validate_and_infer_types();
    }

    void validate_and_infer_types() override {
        ov::PartialShape shape = get_input_partial_shape(0);
        if (shape.rank().is_static()) shape[shape.rank().get_length() - 1] = rows_;
        set_output_type(0, ov::element::f32, shape);
    }

    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        return std::make_shared<GgmlMatMul>(args.at(0), args.at(1), ggml_type_, rows_, columns_, repacked_);
    }

    bool visit_attributes(ov::AttributeVisitor& visitor) override {
        visitor.on_attribute("ggml_type", ggml_type_);
        visitor.on_attribute("rows", rows_);
        visitor.on_attribute("columns", columns_);
        visitor.on_attribute("repacked", repacked_);
        return true;
    }

    bool has_evaluate() const override { return true; }

    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const ov::Tensor& x = inputs[0];
        const ov::Tensor& blocks = inputs[1];
        ov::Shape shape = x.get_shape();
        if (shape.empty() || shape.back() != static_cast<size_t>(columns_))
            throw std::runtime_error("GgmlMatMul: the input's last dimension is not the weight's columns");
        shape.back() = static_cast<size_t>(rows_);
        outputs[0].set_shape(shape);
        const int64_t m = static_cast<int64_t>(x.get_size()) / columns_;
        if (m == 0) return true;
        const auto type = static_cast<ggml_type>(ggml_type_);
        if (blocks.get_byte_size() != ggml_row_size(type, columns_) * rows_)
            throw std::runtime_error("GgmlMatMul: the blocks' size does not fit the type and shape");
        const auto* weight = static_cast<const uint8_t*>(blocks.data());
        std::call_once(layout_->once, [&] {
            if (repacked_) layout_->found = layout_of(type, rows_, columns_);
        });
        const Layout& layout = layout_->found;
        if (repacked_ && !layout.extra)
            throw std::runtime_error("GgmlMatMul: the blocks are repacked in a layout this CPU's ggml does not have");
        const float* input = x.data<const float>();
        float* output = outputs[0].data<float>();
        // parts of whole 16-row groups (ggml's chunks), kPartsPerThread per thread of the calling
        // arena (a thread that finishes first takes what another has not begun), one where a
        // part's fixed cost outweighs that
        const int64_t groups = (rows_ + 15) / 16;
        const int64_t threads = tbb::this_task_arena::max_concurrency();
        const int64_t per_thread = m < kGemmFromRows ? 1 : kPartsPerThread;
        const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(per_thread * threads, groups));
        std::vector<char> done(parts, 0);
        tbb::parallel_for(
            int64_t{0}, parts,
            [&](int64_t part) {
                const int64_t first = std::min(rows_, groups * part / parts * 16);
                const int64_t last = std::min(rows_, groups * (part + 1) / parts * 16);
                done[part] = last <= first || multiply(type, weight, layout, first, last - first, columns_, input, m, output, rows_);
            },
            tbb::simple_partitioner());
        return std::all_of(done.begin(), done.end(), [](char ok) { return ok != 0; });
    }

private:
    struct FoundLayout {
        std::once_flag once;
        Layout found;
    };
    std::shared_ptr<FoundLayout> layout_ = std::make_shared<FoundLayout>();
    int64_t ggml_type_ = 0;
    int64_t rows_ = 0;
    int64_t columns_ = 0;
    int64_t repacked_ = 0;
};

// While alive, ggml's debug lines (one per repacked tensor) are dropped; the rest goes on to the
// logger that was set before.
class QuietDebug {
public:
    QuietDebug() {
        ggml_log_get(&saved_, &saved_data_);
        ggml_log_set(&forward, this);
    }
    ~QuietDebug() { ggml_log_set(saved_, saved_data_); }

private:
    static void forward(ggml_log_level level, const char* text, void* self) {
        const auto* quiet = static_cast<const QuietDebug*>(self);
        if (level == GGML_LOG_LEVEL_DEBUG) return;
        if (quiet->saved_) quiet->saved_(level, text, quiet->saved_data_);
        else std::fputs(text, stderr);
    }
    ggml_log_callback saved_ = nullptr;
    void* saved_data_ = nullptr;
};

// Write `rows` x `columns` blocks of `type` into `out` (as many bytes) in the layout ggml's
// kernels want on this CPU. 1: repacked; 0: this CPU's ggml has no layout for the type and shape
// (`out` untouched).
extern "C" int aios_ggml_repack(int type, int64_t rows, int64_t columns, const void* blocks, void* out) {
    ggml_backend_buffer_type_t buffer_type = repack_buffer_type();
    if (!buffer_type || !layout_of(static_cast<ggml_type>(type), rows, columns).extra) return 0;
    std::vector<uint8_t> memory(ggml_tensor_overhead() * 2);
    ggml_init_params params = {memory.size(), memory.data(), true};
    std::unique_ptr<ggml_context, decltype(&ggml_free)> context(ggml_init(params), ggml_free);
    ggml_tensor* tensor = ggml_new_tensor_2d(context.get(), static_cast<ggml_type>(type), columns, rows);
    std::unique_ptr<ggml_backend_buffer, decltype(&ggml_backend_buffer_free)> buffer(
        ggml_backend_buft_alloc_buffer(buffer_type, ggml_nbytes(tensor)), ggml_backend_buffer_free);
    if (!buffer || ggml_backend_tensor_alloc(buffer.get(), tensor, ggml_backend_buffer_get_base(buffer.get())) !=
                       GGML_STATUS_SUCCESS)
        return 0;
    {
        QuietDebug quiet;
        ggml_backend_tensor_set(tensor, blocks, 0, ggml_nbytes(tensor));  // repacks
    }
    std::memcpy(out, tensor->data, ggml_nbytes(tensor));
    return 1;
}

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({std::make_shared<ov::OpExtension<GgmlMatMul>>()}));
